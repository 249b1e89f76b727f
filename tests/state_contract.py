"""The contract of the state backends: one suite, run over every backend.

The runtime's ports, :class:`~agentstream.runtime.records.KeyStateBackend` and
:class:`~agentstream.runtime.action_state.ActionStateStore`, promise the same behaviour
whatever keeps the state. These tests say what that behaviour is; each tier runs them over
its backends by providing a ``backend`` fixture (a :class:`Backend`):

- tests/unit/test_state_contract.py: the in-memory backends (objects, and bytes);
- tests/integration/test_state_contract.py: the changelog backend (RocksDB + the changelog
  topic on the broker), where ``reopen`` is a new worker on a new machine: the local
  databases are gone and everything is recovered from the changelog.

No Kafka client is imported here: the unit tier uses this module too.

Keys are slots, ``(partition, record key)``, as the worker addresses them; the in-memory
backends take any hashable key.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from agentstream.runtime.action_state import ActionState, ActionStateStore, CallRecord
from agentstream.runtime.memory import MemoryStore
from agentstream.runtime.records import InputRecord, KeyRecord, KeyStateBackend

__all__ = [
    "Backend",
    "test_a_key_record_round_trips_with_every_field",
    "test_a_new_record_replaces_the_old_one",
    "test_action_state_round_trips_with_every_field",
    "test_every_key_with_a_record_is_listed",
    "test_memory_comes_back_as_the_last_finished_input_left_it",
    "test_memory_is_kept_per_key_and_a_put_without_memory_keeps_it",
    "test_pruning_drops_the_input_and_nothing_else",
    "test_pruning_inputs_in_order_leaves_none_behind",
    "test_pruning_what_is_not_there_is_harmless",
    "test_runs_are_kept_apart_by_key_seq_action_and_event",
    "test_unknown_keys_and_runs_have_no_record",
    "test_writing_a_run_again_replaces_it",
]


class Backend(Protocol):
    """One state backend under test."""

    name: str
    key_state: KeyStateBackend
    action_states: ActionStateStore

    async def reopen(self) -> None:
        """What a restart does: afterwards ``key_state`` and ``action_states`` are the
        state as another process would find it."""


A: Hashable = (0, "a")
B: Hashable = (1, "b")
C: Hashable = (1, 42)
D: Hashable = (0, b"\x00bytes")


def _input(key: Any, value: Any, n: int) -> InputRecord:
    return InputRecord(key, value, f"in/{n}", 1_700_000_000_000 + n, partition=1, offset=n)


def _state(n: int, *, completed: bool = True) -> ActionState:
    return ActionState(
        completed=completed,
        memory_updates=(("set", "short", "count", n), ("obj", "sensory", "notes", None)),
        sent_events=(b"packed-event-%d" % n, b"\x00\xff"),
        calls=(
            CallRecord("tools.search", "d1", "ok", result=b"\x91\xa3hit"),
            CallRecord(
                "tools.pay", "d2", "error", error_type="builtins.ValueError", error_message="no"
            ),
            CallRecord("tools.ship", "d3", "started"),
        ),
    )


async def test_unknown_keys_and_runs_have_no_record(backend: Backend) -> None:
    assert backend.key_state.get(A) is None
    assert backend.action_states.get(A, 1, "act", "e1") is None
    assert not backend.action_states.has_input(A, 1)
    assert list(backend.key_state.keys()) == []


async def test_a_key_record_round_trips_with_every_field(backend: Backend) -> None:
    """Scenario: a key is busy (an input in flight, two pending, memory) when the worker
    restarts. We expect: its record comes back field for field."""
    record = KeyRecord(
        seq=7,
        current=_input("a", {"text": "hi", "n": [1, 2.5, None, True]}, 7),
        pending=[_input("a", "second", 8), _input("a", b"\x00raw", 9)],
        last_offset=9,
    )
    idle = KeyRecord(seq=2, last_offset=4)
    backend.key_state.put(A, record)
    backend.key_state.put(B, idle)
    await backend.reopen()
    assert backend.key_state.get(A) == record
    assert backend.key_state.get(B) == idle


async def test_a_new_record_replaces_the_old_one(backend: Backend) -> None:
    backend.key_state.put(A, KeyRecord(seq=1, current=_input("a", 1, 1)))
    backend.key_state.put(A, KeyRecord(seq=1, last_offset=1))
    assert backend.key_state.get(A) == KeyRecord(seq=1, last_offset=1)
    await backend.reopen()
    assert backend.key_state.get(A) == KeyRecord(seq=1, last_offset=1)


async def test_every_key_with_a_record_is_listed(backend: Backend) -> None:
    for n, key in enumerate((A, B, C, D)):
        backend.key_state.put(key, KeyRecord(seq=n))
    assert sorted(map(repr, backend.key_state.keys())) == sorted(map(repr, (A, B, C, D)))
    await backend.reopen()
    assert sorted(map(repr, backend.key_state.keys())) == sorted(map(repr, (A, B, C, D)))
    assert [backend.key_state.get(k) for k in (A, B, C, D)] == [KeyRecord(seq=n) for n in range(4)]


async def test_action_state_round_trips_with_every_field(backend: Backend) -> None:
    """Scenario: an action completed (memory updates, sent events, durable calls ended
    every way) and another was cut off after a durable call, then the worker restarts.
    We expect: both records come back as they were written."""
    backend.action_states.put(A, 3, "plan", "e1", _state(1))
    backend.action_states.put(A, 3, "act", "e2", _state(2, completed=False))
    await backend.reopen()
    assert backend.action_states.get(A, 3, "plan", "e1") == _state(1)
    assert backend.action_states.get(A, 3, "act", "e2") == _state(2, completed=False)
    assert backend.action_states.has_input(A, 3)


async def test_runs_are_kept_apart_by_key_seq_action_and_event(backend: Backend) -> None:
    states = backend.action_states
    runs = [
        (A, 1, "plan", "e1"),
        (A, 1, "plan", "e2"),
        (A, 1, "act", "e1"),
        (A, 2, "plan", "e1"),
        (B, 1, "plan", "e1"),
    ]
    for n, run in enumerate(runs):
        states.put(*run, _state(n))
    await backend.reopen()
    states = backend.action_states
    assert [states.get(*run) for run in runs] == [_state(n) for n in range(len(runs))]
    assert states.get(C, 1, "plan", "e1") is None
    assert not states.has_input(A, 3)


async def test_writing_a_run_again_replaces_it(backend: Backend) -> None:
    """An action's state is written when a durable call ends and again when it completes:
    the last write is the record."""
    backend.action_states.put(A, 1, "act", "e1", ActionState(False, calls=_state(0).calls[:1]))
    backend.action_states.put(A, 1, "act", "e1", _state(1))
    assert backend.action_states.get(A, 1, "act", "e1") == _state(1)
    await backend.reopen()
    assert backend.action_states.get(A, 1, "act", "e1") == _state(1)


async def test_pruning_drops_the_input_and_nothing_else(backend: Backend) -> None:
    """Scenario: a key's input 1 is committed while its input 2 is in flight.
    We expect: pruning input 1 drops all its runs; input 2 and other keys keep theirs,
    also after a restart."""
    states = backend.action_states
    states.put(A, 1, "plan", "e1", _state(1))
    states.put(A, 1, "act", "e2", _state(2))
    states.put(A, 2, "plan", "e3", _state(3))
    states.put(B, 1, "plan", "e1", _state(4))
    states.prune(A, 1)
    await backend.reopen()
    states = backend.action_states
    assert not states.has_input(A, 1)
    assert states.get(A, 1, "plan", "e1") is None and states.get(A, 1, "act", "e2") is None
    assert states.get(A, 2, "plan", "e3") == _state(3)
    assert states.get(B, 1, "plan", "e1") == _state(4)


async def test_pruning_inputs_in_order_leaves_none_behind(backend: Backend) -> None:
    """The operator prunes each finished input, in order."""
    states = backend.action_states
    for seq in range(1, 6):
        states.put(A, seq, "plan", f"e{seq}", _state(seq))
    for seq in range(1, 6):
        states.prune(A, seq)
    await backend.reopen()
    assert not any(backend.action_states.has_input(A, seq) for seq in range(1, 6))


async def test_pruning_what_is_not_there_is_harmless(backend: Backend) -> None:
    backend.action_states.put(B, 1, "plan", "e1", _state(1))
    backend.action_states.prune(A, 1)
    await backend.reopen()
    assert backend.action_states.get(B, 1, "plan", "e1") == _state(1)
    assert not backend.action_states.has_input(A, 1)


def _memory(*writes: tuple[str, str, Any], base: dict[str, Any] | None = None) -> MemoryStore:
    """A short-term memory after ``writes`` (("set", path, value) or ("obj", path, None))
    over ``base`` (what the backend returned), as an input leaves it."""
    store = MemoryStore("short", base)
    for op, path, value in writes:
        store.apply((op, "short", path, value))
    return store


def _tree(state: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    if state is None:
        return {}, []
    return dict(state["values"]), sorted(state["objects"])


async def test_memory_comes_back_as_the_last_finished_input_left_it(backend: Backend) -> None:
    """Scenario: three inputs of a key finish: the first writes a counter, a big value
    and an object with a field; the second bumps the counter only; the third replaces
    the object by a plain value and adds a nested path. We expect: after each, and after
    a restart, the memory is what the input left, paths and objects alike."""
    states = backend.key_state
    big = "x" * 100_000
    first = _memory(("set", "n", 1), ("set", "big", big), ("set", "profile.name", "Ada"))
    states.put(A, KeyRecord(seq=1), first)
    assert _tree(states.memory(A)) == (
        {"n": 1, "big": big, "profile.name": "Ada"},
        ["profile"],
    )
    second = _memory(("set", "n", 2), base=states.memory(A))
    states.put(A, KeyRecord(seq=2), second)
    third = _memory(
        ("set", "profile", "gone"), ("set", "doc.a.b", [1, {"c": b"\x00"}]), base=states.memory(A)
    )
    states.put(A, KeyRecord(seq=3), third)
    expected = (
        {"n": 2, "big": big, "profile": "gone", "doc.a.b": [1, {"c": b"\x00"}]},
        ["doc", "doc.a"],
    )
    assert _tree(states.memory(A)) == expected
    await backend.reopen()
    assert _tree(backend.key_state.memory(A)) == expected
    assert backend.key_state.get(A) == KeyRecord(seq=3)


async def test_memory_is_kept_per_key_and_a_put_without_memory_keeps_it(backend: Backend) -> None:
    """Scenario: two keys finish inputs with memory; then one accepts a pending input (a
    put without memory) and the other's memory is emptied. We expect: each key keeps its
    own memory, the put without memory changes none, and an empty memory reads as None."""
    states = backend.key_state
    states.put(A, KeyRecord(seq=1), _memory(("set", "who", "a")))
    states.put(B, KeyRecord(seq=1), _memory(("set", "who", "b"), ("obj", "o", None)))
    states.put(A, KeyRecord(seq=2, current=_input("a", 2, 2)))
    emptied = _memory(base=states.memory(B))
    emptied.clear()
    states.put(B, KeyRecord(seq=2), emptied)
    assert states.memory(C) is None
    await backend.reopen()
    assert _tree(backend.key_state.memory(A)) == ({"who": "a"}, [])
    assert backend.key_state.memory(B) is None
    assert backend.key_state.get(A) == KeyRecord(seq=2, current=_input("a", 2, 2))
