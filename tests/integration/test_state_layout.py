"""What the changelog backend writes (issue 15): an input's cost follows what it changes,
and data directories and changelogs of the previous layout migrate.

Measured at the store's write calls: the bytes of every value put, by key prefix.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from agentstream.runtime.action_state import ActionState, CallRecord
from agentstream.runtime.memory import MemoryStore
from agentstream.runtime.records import InputRecord, KeyRecord, encode_record
from agentstream.service import segments
from agentstream.service.tables import ChangelogActionStateStore, ChangelogKeyState
from agentstream.state import ChangelogStore
from tests.brokers import Broker

SLOT = (0, "user-1")


class Tables:
    def __init__(self, bootstrap: str, topic: str, data_dir: Path):
        self.bootstrap, self.topic, self._data_dir = bootstrap, topic, data_dir
        self.writes: list[tuple[bytes, int]] = []  # (key, value bytes) of every write

    async def open(self) -> None:
        self.store = ChangelogStore(
            data_dir=self._data_dir,
            changelog_topic=self.topic,
            bootstrap=self.bootstrap,
            flush_interval_s=0.01,
        )
        await self.store.start()
        await self.store.assign([0])
        put, delete = self.store.put, self.store.delete

        def counted_put(partition: int, key: bytes, value: bytes) -> None:
            self.writes.append((key, len(value)))
            put(partition, key, value)

        def counted_delete(partition: int, key: bytes) -> None:
            self.writes.append((key, 0))
            delete(partition, key)

        self.store.put = counted_put  # type: ignore[method-assign]
        self.store.delete = counted_delete  # type: ignore[method-assign]
        self.key_state = ChangelogKeyState(self.store)
        self.action_states = ChangelogActionStateStore(self.store)

    async def reopen(self) -> None:
        await self.store.stop()
        await self.open()

    def written(self, prefix: bytes = b"") -> int:
        return sum(size for key, size in self.writes if key.startswith(prefix))


@pytest.fixture
async def tables(broker: Broker, topic_factory: Any, tmp_path: Path) -> AsyncIterator[Tables]:
    topic = await topic_factory(1, "changelog")
    tables = Tables(broker.bootstrap, topic, tmp_path / "state")
    await tables.open()
    try:
        yield tables
    finally:
        await tables.store.stop()


def _finish(tables: Tables, seq: int, *writes: tuple[str, Any]) -> None:
    memory = MemoryStore("short", tables.key_state.memory(SLOT))
    for path, value in writes:
        memory.apply(("set", "short", path, value))
    tables.key_state.put(SLOT, KeyRecord(seq=seq), memory)


async def test_an_input_writes_the_memory_it_changed_and_nothing_else(tables: Tables) -> None:
    """Scenario: a key holds 100 KB of memory; an input bumps its counter.
    We expect: the input writes the counter and the key record, a few hundred bytes; the
    100 KB value is not written again, and is still there after a restart."""
    big = ["x" * 1000] * 100
    _finish(tables, 1, ("history", big), ("n", 1))
    assert tables.written() > 100_000
    tables.writes.clear()
    _finish(tables, 2, ("n", 2))
    await tables.store.flush()
    assert [key for key, _ in tables.writes] == [b"m" + b"\0\0\0\x07\xa6user-1" + b"n"]
    assert tables.written() < 100
    await tables.reopen()
    memory = tables.key_state.memory(SLOT)
    assert memory is not None and memory["values"] == {"history": big, "n": 2}


def _extend(tables: Tables, seq: int, path: str, items: list[Any]) -> None:
    """An input that appends ``items`` to the list at ``path`` (as ``set`` records it)."""
    memory = MemoryStore("short", tables.key_state.memory(SLOT))
    memory.apply(("ext", "short", path, [len(memory.values[path]), items]))
    tables.key_state.put(SLOT, KeyRecord(seq=seq), memory)


def _segment_keys(tables: Tables) -> list[bytes]:
    return [key for key, _ in tables.store.scan(0, segments.SEGMENT)]


async def test_appending_to_a_long_list_writes_what_was_appended(
    tables: Tables, tmp_path: Path
) -> None:
    """Scenario: a key's history of 20 KB grows by a 1 KB message per input for 100
    inputs, then is replaced by a plain value.
    We expect: an append writes its message and a small header, not the history; every
    MAX_SEGMENTS appends the history is rewritten once, so a load reads a bounded number
    of segments, and the replaced ones are deleted; the history reads back whole after a
    restart and from the changelog alone, and moves with its key; replacing it with a
    plain value deletes its segments."""
    message = "m" * 1000
    history = [message] * 20
    _finish(tables, 1, ("history", history))
    per_input = []
    rewritten = 0
    for seq in range(2, 102):
        tables.writes.clear()
        entry = f"{seq:04}{message}"
        _extend(tables, seq, "history", [entry])
        history = [*history, entry]
        per_input.append(tables.written())
        rewritten += tables.written() > 10_000
    appends = sorted(per_input)[: len(per_input) - rewritten]
    assert max(appends) < 1_200, f"an append wrote {max(appends)} bytes"
    assert rewritten <= 1 + 100 // segments.MAX_SEGMENTS, f"rewritten {rewritten} times"
    whole = sum(len(history[:n]) for n in range(21, 121)) * 1000  # rewriting it every time
    assert sum(per_input) < whole / 10
    assert 1 <= len(_segment_keys(tables)) <= segments.MAX_SEGMENTS
    assert tables.key_state.memory(SLOT) == {"values": {"history": history}, "objects": []}
    exported = [key for key, _ in tables.key_state.export(SLOT)]
    assert sorted(_segment_keys(tables)) == sorted(
        key for key in exported if key[:1] == segments.SEGMENT
    )

    await tables.reopen()
    assert tables.key_state.memory(SLOT) == {"values": {"history": history}, "objects": []}
    restored = Tables(tables.bootstrap, tables.topic, tmp_path / "from-changelog")
    await restored.open()
    try:
        assert restored.key_state.memory(SLOT) == {"values": {"history": history}, "objects": []}
    finally:
        await restored.store.stop()

    _finish(tables, 102, ("history", "cleared"))
    assert _segment_keys(tables) == []
    assert tables.key_state.memory(SLOT) == {"values": {"history": "cleared"}, "objects": []}


async def test_a_header_is_the_switch_between_generations(tables: Tables) -> None:
    """Scenario: a crash cut the rewrite of a long list after its new segment was
    written but before its header, and also left a segment of an append whose header
    never came.
    We expect: the list reads as the header says (the old generation, without the
    orphan append), and the next rewrite deletes what no header lists."""
    history = ["x" * 1000] * 20
    _finish(tables, 1, ("history", history))
    _extend(tables, 2, "history", ["y"])
    kid = b"\0\0\0\x07\xa6user-1"
    prefix = segments.SEGMENT + kid + b"\0\0\0\x07history"
    store = tables.store
    store.put(0, prefix + (2).to_bytes(4, "big") + (0).to_bytes(4, "big"), b"\x03junk")
    store.put(0, prefix + (1).to_bytes(4, "big") + (22).to_bytes(4, "big"), b"\x03junk")
    expected = {"values": {"history": [*history, "y"]}, "objects": []}
    assert tables.key_state.memory(SLOT) == expected
    _finish(tables, 3, ("history", ["z"] * 10_000))
    assert len(_segment_keys(tables)) == 1
    assert tables.key_state.memory(SLOT) == {"values": {"history": ["z"] * 10_000}, "objects": []}


async def test_each_action_run_is_written_once(tables: Tables) -> None:
    """Scenario: one input runs 50 chained actions (each records its run when it ends).
    We expect: the bytes written are the 50 records, not a value that every action
    rewrites (which grows as n²); pruning deletes them all."""
    state = ActionState(True, (("set", "short", "step", 1),), (b"e" * 200,), ())
    one = len(encode_record(state))
    for step in range(50):
        tables.action_states.put(SLOT, 1, f"step{step}", f"e{step}", state)
    assert tables.written() == 50 * one
    assert tables.action_states.has_input(SLOT, 1)
    assert len(tables.action_states.runs(SLOT, 1)) == 50
    tables.action_states.prune(SLOT, 1)
    await tables.reopen()
    assert not tables.action_states.has_input(SLOT, 1)
    assert tables.action_states.count(0) == 0


async def test_a_recovered_input_is_listed_and_pruned(tables: Tables) -> None:
    state = ActionState(True)
    tables.action_states.put(SLOT, 4, "a", "e1", state)
    tables.action_states.put(SLOT, 4, "b", "e2", state)
    await tables.reopen()  # the new store does not know which keys the input has
    assert tables.action_states.get(SLOT, 4, "b", "e2") == state
    tables.action_states.prune(SLOT, 4)
    assert not tables.action_states.has_input(SLOT, 4)
    assert tables.action_states.runs(SLOT, 4) == {}


def _legacy_key(kind: bytes, key: Any, seq: int | None = None) -> bytes:
    packed = msgpack.packb(key)
    return kind + packed + (b"" if seq is None else b"\0" + struct.pack(">Q", seq))


async def test_a_version_1_state_directory_and_changelog_migrate(tables: Tables) -> None:
    """Scenario: the worker of an older agentstream stored a busy key (its memory inside
    its key record, its current input's action runs in one value) and an idle key with a
    finished input's action state left unpruned; the new version opens the changelog.
    We expect: the busy key's record, memory and action runs read as written, the busy
    input replays from them; the garbage goes; and the key is stored in today's layout."""
    current = InputRecord("user-1", "hi", "in/0/3", 1_700_000_000_000, 0, 3)
    memory = {"values": {"n": 2, "profile.name": "Ada"}, "objects": ["profile"]}
    legacy_record = b"\x01" + msgpack.packb([3, list(current), [], memory, 3])
    run = ActionState(
        True, (("set", "short", "n", 3),), (b"event",), (CallRecord("f", "d", "ok", b"\x01"),)
    )
    legacy_runs = msgpack.packb({"ask\0e1": b"\x01" + encode_record(run)[1:]})  # version 1
    store = tables.store
    store.put(0, _legacy_key(b"k", "user-1"), legacy_record)
    store.put(0, _legacy_key(b"a", "user-1", 3), legacy_runs)
    store.put(0, _legacy_key(b"k", "idle"), b"\x01" + msgpack.packb([5, None, [], None, 9]))
    store.put(0, _legacy_key(b"a", "idle", 5), legacy_runs)
    await tables.reopen()

    key_state, states = tables.key_state, tables.action_states
    assert sorted(slot[1] for slot in key_state.keys_of(0)) == ["idle", "user-1"]
    assert key_state.get(SLOT) == KeyRecord(seq=3, current=current, last_offset=3)
    assert key_state.memory(SLOT) == memory
    assert states.has_input(SLOT, 3) and states.get(SLOT, 3, "ask", "e1") == run
    # The busy key's legacy runs moved when its record was first read; the idle key's go.
    assert states.collect_garbage(0, key_state) == 1
    assert key_state.get((0, "idle")) == KeyRecord(seq=5, last_offset=9)
    await tables.reopen()
    assert not any(True for _ in tables.store.scan(0, b"a"))
    assert tables.key_state.memory(SLOT) == memory
    assert tables.action_states.get(SLOT, 3, "ask", "e1") == run


async def test_the_listing_of_inputs_is_read_again_after_each_assignment(
    tables: Tables, tmp_path: Path
) -> None:
    """Scenario: a worker lists partition 0's inputs with action state, loses the partition
    to another worker, which records a run of a new input, and gets it back.
    We expect: the new input is known to have action state (its run replays)."""
    state = ActionState(True)
    tables.action_states.put(SLOT, 5, "a", "e1", state)
    assert tables.action_states.has_input(SLOT, 5)
    await tables.store.revoke([0])
    other = Tables(tables.bootstrap, tables.topic, tmp_path / "other")
    await other.open()
    other.action_states.put(SLOT, 6, "a", "e2", state)
    await other.store.stop()
    await tables.store.assign([0])
    assert tables.action_states.has_input(SLOT, 6)
    assert tables.action_states.has_input(SLOT, 5)


async def test_a_revoked_partition_is_no_longer_listed(tables: Tables) -> None:
    """Scenario: a worker lists partition 0's inputs with action state and loses the
    partition (the worker forgets it, as it does its key state).
    We expect: nothing of the partition stays listed in memory; when it comes back, its
    inputs are listed again from the store."""
    state = ActionState(True)
    tables.action_states.put(SLOT, 5, "a", "e1", state)
    await tables.store.revoke([0])
    tables.action_states.forget({0})
    assert tables.action_states._inputs == {}
    assert tables.action_states._listed == {}
    await tables.store.assign([0])
    assert tables.action_states.has_input(SLOT, 5)
