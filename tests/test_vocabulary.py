"""One vocabulary: chapters measure δ, weight gradients, saturation, dead units and the verdict thresholds
through ``deepgrad.diagnostics``, never by hand; and only ``diagnostics.Recorder`` registers hooks.

A chapter that teaches why a hand computation misleads (the weight-gradient trap) marks that line with
``# vocabulary: <reason>``; the test then lets it through and the reason is on the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
LIBRARY = sorted((ROOT / "lib" / "deepgrad").glob("*.py"))
ALLOW = "# vocabulary:"

#: What a chapter must not compute itself, and what to call instead.
HAND_MADE = [
    (re.compile(r"\.register_(forward_pre_|forward_|full_backward_|post_accumulate_grad_)?hook\("),
     "registers a hook itself: use dg.diagnostics.Recorder (or GradientReport, probe)"),
    (re.compile(r"\*\s*\(1\s*-\s*[\w.()\[\]]+\)\s*<|1\s*-\s*[\w.()\[\]]+\s*\*\*\s*2\s*<|slope\w*\s*<\s*0?\.0"),
     "decides saturation by hand: use dg.diagnostics.saturated_fraction (the one SATURATION)"),
    (re.compile(r"<\s*0\.025\b"),
     "hard-codes a sigmoid saturation threshold: use dg.diagnostics.SATURATION / saturated_fraction"),
    (re.compile(r"\(\s*[\w.]+\s*[>!]=?\s*0\s*\)\.any\(\s*(dim\s*=\s*)?0"),
     "counts dead units by hand: use dg.diagnostics.active_units / dead_fraction"),
    (re.compile(r"\bweight\.grad\.norm\(\)\s*/|\bgrad\.norm\(\)\s*/\s*\w+\.grad\.norm\(\)"),
     "compares weight-gradient norms by hand: vanishing is measured with δ "
     "(dg.diagnostics.probe / GradientReport); mark a line that teaches the trap"),
]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(cell number, line) of every code line of a chapter (a MyST notebook)."""
    notebook = jupytext.read(path)
    return [(index, line) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
            for line in cell.source.splitlines()]


def offences(lines: list[tuple[int, str]]) -> list[str]:
    found = []
    for cell, line in lines:
        if ALLOW in line:
            continue
        for pattern, why in HAND_MADE:
            if pattern.search(line):
                found.append(f"cell {cell}: {line.strip()!r} {why}")
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapters_measure_through_the_library(path):
    found = offences(code_lines(path))
    assert not found, f"chapters/{path.name}:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "h = layer.register_forward_hook(keep)",
    "saturated = (a * (1 - a) < 0.025).double().mean()",
    "slope = torch.sigmoid(t) * (1 - torch.sigmoid(t)); bad = (slope < 0.025)",
    "share = (1 - a ** 2 < 0.1).double().mean()",
    "alive = (out > 0).any(dim=0)",
    "ratio = (first.weight.grad.norm() / last.weight.grad.norm()).item()",
])
def test_the_check_catches_hand_computations(line):
    assert offences([(0, line)])
    assert not offences([(0, line + "  # vocabulary: the weight-gradient trap, taught here")])


@pytest.mark.parametrize("line", [
    "saturated = dg.diagnostics.saturated_fraction(a, torch.nn.Sigmoid)",
    "assert ratio < 0.1",
    "stats = dg.diagnostics.probe(model, x, y)",
])
def test_the_check_lets_library_calls_through(line):
    assert not offences([(0, line)])


def test_only_the_recorder_registers_hooks_in_the_library():
    pattern = HAND_MADE[0][0]
    outside = [f"{path.name}:{n}" for path in LIBRARY if path.name != "diagnostics.py"
               for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not outside, f"hooks registered outside diagnostics.Recorder: {outside}"
