"""The glossary is used: every entry is linked ({term}) from at least one page, and every link names an entry."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "chapters").glob("*.md")) + [ROOT / p for p in ("cheatsheet.md", "notation.md", "intro.md")]
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")


def glossary_entries() -> list[list[str]]:
    """Each entry's names (a term and the aliases on the lines right after it), in glossary order."""
    text = (ROOT / "glossary.md").read_text()
    body = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    entries: list[list[str]] = []
    previous_blank = True
    for line in body.split("\n"):
        if line and not line.startswith(" "):
            if previous_blank or not entries:
                entries.append([line.strip()])
            else:
                entries[-1].append(line.strip())
        previous_blank = not line.strip()
    return entries


def linked_targets() -> set[str]:
    targets = set()
    for page in PAGES:
        if not page.exists():
            continue
        for role in TERM_ROLE.findall(page.read_text()):
            match = re.fullmatch(r"(.*?)\s*<([^>]+)>", role, flags=re.S)
            targets.add((match.group(2) if match else role).strip().lower())
    return targets


def test_the_glossary_has_entries():
    entries = glossary_entries()
    assert len(entries) > 40
    assert ["Backpropagation through time", "BPTT"] in entries


def test_every_glossary_entry_is_linked_from_a_page():
    targets = linked_targets()
    unlinked = [names[0] for names in glossary_entries() if not {n.lower() for n in names} & targets]
    assert not unlinked, f"glossary entries no page links to with {{term}}: {unlinked}"


def test_every_term_link_names_an_entry():
    names = {n.lower() for entry in glossary_entries() for n in entry}
    unknown = sorted(linked_targets() - names)
    assert not unknown, f"{{term}} links to no glossary entry: {unknown}"
