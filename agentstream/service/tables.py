"""The operator's state on a :class:`ChangelogStore`: key records and action state.

Layout in each partition's store (keys are msgpack-encoded record keys)::

    b"k" + key                 -> KeyRecord           (one write per key transition)
    b"a" + key + b"\\0" + seq   -> {action\\0event_id: ActionState bytes} of one input

Action state of one input lives in one value, so pruning an input is one tombstone and a
lookup is one read. The operator addresses a key by its slot, ``(partition, key)``: the
partition its records come from, whose store holds its state.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from agentstream.runtime.action_state import ActionState
from agentstream.runtime.records import KeyRecord, decode_record, encode_record
from agentstream.serde import dumps, loads
from agentstream.state.changelog import ChangelogStore

__all__ = ["ChangelogActionStateStore", "ChangelogKeyState", "Slot"]

_KEY = b"k"
_ACTION = b"a"


def _key_bytes(key: Hashable) -> bytes:
    return dumps(key, what="record key")


Slot = tuple[int, Hashable]
"""A key's identity in the worker's state: (input partition, record key)."""


class ChangelogKeyState:
    """:class:`KeyStateBackend` over the changelogged store.

    Records of busy keys (an input in flight) are also kept decoded in memory, since
    they change several times per input; idle keys live only in RocksDB, so the Python
    heap is bounded by the keys in flight, not by all keys ever seen.
    """

    def __init__(self, store: ChangelogStore):
        self._store = store
        self._busy: dict[Slot, KeyRecord] = {}

    def get(self, slot: Any) -> KeyRecord | None:
        record = self._busy.get(slot)
        if record is not None:
            return record
        raw = self._store.get(slot[0], _KEY + _key_bytes(slot[1]))
        return None if raw is None else decode_record(KeyRecord, raw)

    def put(self, slot: Any, record: KeyRecord) -> None:
        # Deferred: a busy key's record changes with every input it accepts or finishes;
        # only the state at flush time is encoded (a hot key's long pending queue would
        # otherwise be re-encoded on every arrival).
        self._store.put_deferred(slot[0], _KEY + _key_bytes(slot[1]), lambda: encode_record(record))
        if record.current is None:
            self._busy.pop(slot, None)
        else:
            self._busy[slot] = record

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached records of partitions that moved away."""
        doomed = frozenset(partitions)
        for slot in [s for s in self._busy if s[0] in doomed]:
            del self._busy[slot]

    def keys(self) -> Iterator[Slot]:
        for partition in sorted(self._store.assigned()):
            yield from self.keys_of(partition)

    def keys_of(self, partition: int) -> Iterator[Slot]:
        """Slots of the keys with a record in ``partition``."""
        for raw_key, _ in self._store.scan(partition, _KEY):
            yield (partition, loads(raw_key[len(_KEY) :]))

    def count(self, partition: int) -> int:
        return self._store.count(partition, _KEY)


class ChangelogActionStateStore:
    """:class:`ActionStateStore` over the changelogged store."""

    def __init__(self, store: ChangelogStore):
        self._store = store

    @staticmethod
    def _slot(slot: Any, seq: int) -> bytes:
        return _ACTION + _key_bytes(slot[1]) + b"\0" + struct.pack(">Q", seq)

    def _load(self, slot: Any, seq: int) -> dict[str, bytes]:
        raw = self._store.get(slot[0], self._slot(slot, seq))
        return {} if raw is None else loads(raw)

    def get(self, slot: Any, seq: int, action: str, event_id: str) -> ActionState | None:
        raw = self._load(slot, seq).get(f"{action}\0{event_id}")
        return None if raw is None else decode_record(ActionState, raw)

    def has_input(self, slot: Any, seq: int) -> bool:
        return self._store.get(slot[0], self._slot(slot, seq)) is not None

    def runs(self, slot: Any, seq: int) -> dict[tuple[str, str], ActionState]:
        """The recorded runs of one input, by (action, event id), for inspection."""
        runs = {}
        for name, raw in self._load(slot, seq).items():
            action, _, event_id = name.partition("\0")
            runs[(action, event_id)] = decode_record(ActionState, raw)
        return runs

    def put(self, slot: Any, seq: int, action: str, event_id: str, state: ActionState) -> None:
        runs = self._load(slot, seq)
        runs[f"{action}\0{event_id}"] = encode_record(state)
        self._store.put(slot[0], self._slot(slot, seq), dumps(runs))

    def prune(self, slot: Any, seq: int) -> None:
        """Drop the action state of the key's input ``seq``.

        The operator prunes every finished input, one by one, so older inputs are gone
        already; deleting the one slot keeps pruning O(1) instead of a prefix scan.
        """
        raw_key = self._slot(slot, seq)
        if self._store.get(slot[0], raw_key) is not None:
            self._store.delete(slot[0], raw_key)

    def collect_garbage(self, partition: int, key_state: ChangelogKeyState) -> int:
        """Delete action state of inputs that finished but were never pruned (the worker
        died between an input's end and the next commit). Returns how many went."""
        doomed = []
        for raw_key, _ in self._store.scan(partition, _ACTION):
            key = loads(raw_key[len(_ACTION) : -9])
            (seq,) = struct.unpack(">Q", raw_key[-8:])
            record = key_state.get((partition, key))
            if record is None or seq < record.seq or (record.current is None and seq == record.seq):
                doomed.append(raw_key)
        for raw_key in doomed:
            self._store.delete(partition, raw_key)
        return len(doomed)

    def count(self, partition: int) -> int:
        return self._store.count(partition, _ACTION)
