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

from pysock._handshake import TURNS, Turn
from pysock._state import (
    DESCRIPTOR_TRANSITIONS,
    IN_HANGUP_SET,
    IN_SELECTOR,
    PEER_ENDED,
    READ_ENDED,
    READ_TRANSITIONS,
    READER_CLOSED,
    REGISTRATION_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    WRITE_TRANSITIONS,
    Descriptor,
    DescriptorEvent,
    Event,
    Read,
    ReadEvent,
    Registration,
    RegistrationEvent,
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
from pysock._wire import FAREWELLS, Farewell

DESIGN: Final = Path(__file__).resolve().parents[1] / "docs" / "design.md"
_DIAGRAMS: Final = re.compile(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", re.S)
EXPECTED: Final = {
    "lifecycle": mermaid(TRANSITIONS, State.CONNECTING),
    "read side": mermaid(READ_TRANSITIONS, Read.OPEN),
    "write side": mermaid(WRITE_TRANSITIONS, Write.OPEN),
    "descriptor": mermaid(DESCRIPTOR_TRANSITIONS, Descriptor.HELD),
    "registration": mermaid(REGISTRATION_TRANSITIONS, Registration.UNWATCHED),
    "TLS handshake's turn": mermaid(TURNS, Turn.STEPPING),
    "TLS farewell": mermaid(FAREWELLS, Farewell.UNSAID),
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


def test_a_descriptor_is_released_once_and_never_taken_back() -> None:
    assert step(DESCRIPTOR_TRANSITIONS, Descriptor.RELEASING, DescriptorEvent.RELEASE) is None
    assert step(DESCRIPTOR_TRANSITIONS, Descriptor.LAST_OUT, DescriptorEvent.RELEASE) is None
    assert step(DESCRIPTOR_TRANSITIONS, Descriptor.HANDED_OFF, DescriptorEvent.RELEASE) is None
    # Only a held descriptor is handed to start_tls(); the loop lets go only of a released one.
    assert {s for s, e in DESCRIPTOR_TRANSITIONS if e is DescriptorEvent.HAND_OFF} == {
        Descriptor.HELD
    }
    assert {s for s, e in DESCRIPTOR_TRANSITIONS if e is DescriptorEvent.LET_GO} == {
        Descriptor.RELEASING
    }
    # A fork makes any descriptor the parent's, and nothing leads back to HELD.
    for state in Descriptor:
        expected = None if state is Descriptor.INHERITED else Descriptor.INHERITED
        assert step(DESCRIPTOR_TRANSITIONS, state, DescriptorEvent.INHERIT) is expected
    assert Descriptor.HELD not in DESCRIPTOR_TRANSITIONS.values()


@pytest.mark.parametrize(("hangup", "selector"), list(itertools.product([False, True], repeat=2)))
def test_registration_is_two_independent_facts(hangup: bool, selector: bool) -> None:
    (start,) = [
        r for r in Registration if (r in IN_HANGUP_SET, r in IN_SELECTOR) == (hangup, selector)
    ]

    def after(event: RegistrationEvent) -> Registration:
        return REGISTRATION_TRANSITIONS.get((start, event), start)

    assert (
        after(RegistrationEvent.WATCH_HANGUP) in IN_HANGUP_SET,
        after(RegistrationEvent.WATCH_HANGUP) in IN_SELECTOR,
    ) == (True, selector)
    assert (
        after(RegistrationEvent.UNWATCH_HANGUP) in IN_HANGUP_SET,
        after(RegistrationEvent.UNWATCH_HANGUP) in IN_SELECTOR,
    ) == (False, selector)
    assert (
        after(RegistrationEvent.ENTER_SELECTOR) in IN_HANGUP_SET,
        after(RegistrationEvent.ENTER_SELECTOR) in IN_SELECTOR,
    ) == (hangup, True)
    assert (
        after(RegistrationEvent.LEAVE_SELECTOR) in IN_HANGUP_SET,
        after(RegistrationEvent.LEAVE_SELECTOR) in IN_SELECTOR,
    ) == (hangup, False)
