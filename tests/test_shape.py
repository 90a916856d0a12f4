"""The shape of pysock's modules and classes: small enough to read in one sitting.

The bounds: no module over 400 lines, no class over 300 lines or with more
than 25 slots of its own, and no class built from two pysock bases (compose
objects instead of mixing them). A unit still over a bound is listed in
``KNOWN`` with its size today, so it may shrink but never grow, and the
entry must go once the unit is within the bound: a ratchet, not a waiver.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Final

PACKAGE: Final = Path(__file__).resolve().parents[1] / "pysock"
MODULE_LINES: Final = 400
CLASS_LINES: Final = 300
SLOTS: Final = 25
# Units over a bound today, with their size: (path or path::Class, measure) -> size.
KNOWN: Final[dict[tuple[str, str], int]] = {}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


@functools.cache
def _classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                found.append((f"{_name(path)}::{node.name}", node))
    return found


def _slots(node: ast.ClassDef) -> int:
    for statement in ast.walk(node):
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__"
            for target in statement.targets
        ):
            value = statement.value
            if isinstance(value, (ast.Tuple, ast.List)):
                return len(value.elts)
    return 0


def _problem(unit: str, measure: str, size: int, bound: int) -> list[str]:
    known = KNOWN.get((unit, measure))
    if known is None:
        return [f"{unit}: {size} {measure}, over the bound of {bound}"] if size > bound else []
    if size > known:
        return [f"{unit}: grew to {size} {measure} (listed at {known})"]
    if size <= bound:
        return [f"{unit} is within {bound} {measure} now: remove it from KNOWN"]
    return []


def test_no_module_is_over_400_lines() -> None:
    problems = []
    for path in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        problems += _problem(_name(path), "lines", lines, MODULE_LINES)
    assert not problems, "\n".join(problems)


def test_no_class_is_over_300_lines_or_25_slots() -> None:
    problems = []
    for unit, node in _classes():
        end = node.end_lineno
        assert end is not None
        problems += _problem(unit, "class lines", end - node.lineno + 1, CLASS_LINES)
        problems += _problem(unit, "slots", _slots(node), SLOTS)
    assert not problems, "\n".join(problems)


def test_no_class_has_two_pysock_bases() -> None:
    ours = {node.name for _, node in _classes()}
    mixed = [
        f"{unit} mixes {bases}: compose objects instead"
        for unit, node in _classes()
        if len(bases := [b.id for b in node.bases if isinstance(b, ast.Name) and b.id in ours]) > 1
    ]
    assert not mixed, "\n".join(mixed)


def test_every_known_unit_exists() -> None:
    units = {_name(path) for path in _modules()} | {unit for unit, _ in _classes()}
    assert not {unit for unit, _ in KNOWN} - units, "KNOWN lists a unit that is gone"


def test_the_measures_see_what_they_measure() -> None:
    # Guards the checker itself: a class it must see, with its slots.
    (node,) = [n for unit, n in _classes() if unit == "pysock/_socket.py::Socket"]
    assert _slots(node) == 5
