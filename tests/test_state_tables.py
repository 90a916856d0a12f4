"""The state tables of `pysock._state`: their rules, and the diagrams docs/design.md shows.

The diagrams are generated from the tables; when a table changes, the failing
test prints the block to paste into design.md.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Final

import pytest

from pysock._state import (
    PEER_ENDED,
    READ_ENDED,
    READ_TRANSITIONS,
    READER_CLOSED,
    TERMINAL,
    TRANSITIONS,
    WRITE_TRANSITIONS,
    Event,
    Read,
    ReadEvent,
    State,
    Write,
    WriteEvent,
    finishes,
    may_read,
    may_write,
    mermaid,
    next_state,
    step,
    upgrade_refusal,
)

DESIGN: Final = Path(__file__).resolve().parents[1] / "docs" / "design.md"
_DIAGRAMS: Final = re.compile(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", re.S)
EXPECTED: Final = {
    "lifecycle": mermaid(TRANSITIONS, State.CONNECTING),
    "read side": mermaid(READ_TRANSITIONS, Read.OPEN),
    "write side": mermaid(WRITE_TRANSITIONS, Write.OPEN),
}


def test_design_md_shows_the_diagrams_of_the_tables() -> None:
    shown = _DIAGRAMS.findall(DESIGN.read_text(encoding="utf-8"))
    for name, diagram in EXPECTED.items():
        assert diagram in shown, f"design.md's {name} diagram is stale; paste:\n{diagram}"
    assert len(shown) == len(EXPECTED), "design.md shows a state diagram no table makes"


def test_mermaid_lists_every_edge_once() -> None:
    text = mermaid(READ_TRANSITIONS, Read.OPEN)
    assert text.splitlines()[:2] == ["stateDiagram-v2", "    [*] --> OPEN"]
    assert "    OPEN --> PEER_DONE: PEER_EOF" in text.splitlines()
    assert len(text.splitlines()) == 2 + len(READ_TRANSITIONS)


def test_no_event_leaves_a_terminal_state_but_close_after_a_clean_end() -> None:
    for (state, event), target in TRANSITIONS.items():
        if state in TERMINAL:
            assert (state, event, target) == (State.FINISHED, Event.CLOSE, State.CLOSED)
    # Every state but CONNECTING is reached, every terminal one from OPEN or CONNECTING.
    assert set(TRANSITIONS.values()) == set(State) - {State.CONNECTING}


def test_the_read_side_never_goes_back_and_waking_ignores_the_fin() -> None:
    assert step(READ_TRANSITIONS, Read.WAKING, ReadEvent.PEER_EOF) is None  # The EOF is ours.
    assert step(READ_TRANSITIONS, Read.PEER_DONE, ReadEvent.PEER_EOF) is None  # Seen once.
    for (source, _), target in READ_TRANSITIONS.items():
        assert source is Read.OPEN or target is Read.DONE
        assert target in READ_ENDED
    assert not any(source is Read.DONE for source, _ in READ_TRANSITIONS)


@pytest.mark.parametrize(("read", "write"), list(itertools.product(Read, Write)))
def test_the_rules_over_both_sides(read: Read, write: Write) -> None:
    over = read is not Read.OPEN and write is Write.DONE
    assert finishes(read, write) is over
    for state in State:
        assert may_read(state, read) is (
            state in (State.OPEN, State.FINISHED) and read not in READER_CLOSED
        )
        assert may_write(state, write) is (state is State.OPEN and write is Write.OPEN)
        refusal = upgrade_refusal(state, read, write)
        if state is not State.OPEN:
            assert refusal is not None and "half" not in refusal
        elif read is not Read.OPEN or write is not Write.OPEN:
            assert refusal == "is half-closed"
        else:
            assert refusal is None


def test_the_named_sets_of_read_states() -> None:
    assert frozenset({Read.PEER_DONE, Read.DONE}) == PEER_ENDED
    assert frozenset({Read.STOPPED, Read.WAKING, Read.DONE}) == READER_CLOSED
    assert READ_ENDED == PEER_ENDED | READER_CLOSED
    assert step(WRITE_TRANSITIONS, Write.DONE, WriteEvent.SHUT) is None


def test_finished_is_terminal_and_still_readable() -> None:
    assert next_state(State.OPEN, Event.FINISHED) is State.FINISHED
    assert State.FINISHED in TERMINAL
    assert may_read(State.FINISHED, Read.PEER_DONE)
    assert not may_read(State.CLOSED, Read.PEER_DONE)
    assert upgrade_refusal(State.FINISHED, Read.PEER_DONE, Write.DONE) == "is closed"
