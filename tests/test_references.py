"""The bibliography parses and every key is unique (a merge that drops a closing brace fails here, early)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from pybtex.database import parse_file

BIB = Path(__file__).resolve().parents[1] / "references.bib"


def test_the_bibliography_parses():
    assert len(parse_file(str(BIB)).entries) > 50


def test_every_key_is_unique_and_every_entry_closes():
    text = BIB.read_text()
    keys = re.findall(r"^@\w+\{([^,]+),", text, flags=re.M)
    assert not [k for k, n in Counter(keys).items() if n > 1]
    # each entry's braces balance before the next entry starts
    for block in re.split(r"\n(?=@)", text.strip()):
        assert block.count("{") == block.count("}"), block.splitlines()[0]


def test_the_brace_check_catches_a_dropped_brace():
    broken = "@misc{a,\n  year = {2018}\n@misc{b,\n  year = {2019}\n}"
    blocks = re.split(r"\n(?=@)", broken)
    assert any(block.count("{") != block.count("}") for block in blocks)
