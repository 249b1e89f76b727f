"""The operator's state on a :class:`ChangelogStore`: key records and action state.

Layout in each partition's store (keys are msgpack-encoded record keys)::

    b"k" + key                 -> KeyRecord           (one write per key transition)
    b"a" + key + b"\\0" + seq   -> {action\\0event_id: ActionState bytes} of one input

Action state of one input lives in one value, so pruning an input is one tombstone and a
lookup is one read. The partition of a key is the partition its records come from.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable, Iterable, Iterator

from agentstream.runtime.action_state import ActionState
from agentstream.runtime.records import KeyRecord, decode_record, encode_record
from agentstream.serde import dumps, loads
from agentstream.state.changelog import ChangelogStore

__all__ = ["ChangelogActionStateStore", "ChangelogKeyState", "KeyPartitions"]

_KEY = b"k"
_ACTION = b"a"


def _key_bytes(key: Hashable) -> bytes:
    return dumps(key, what="record key")


class KeyPartitions:
    """Which partition each known key belongs to (filled from records and recovery)."""

    def __init__(self) -> None:
        self._of: dict[Hashable, int] = {}

    def set(self, key: Hashable, partition: int) -> None:
        self._of[key] = partition

    def get(self, key: Hashable) -> int | None:
        return self._of.get(key)

    def __getitem__(self, key: Hashable) -> int:
        try:
            return self._of[key]
        except KeyError:
            raise KeyError(f"no partition known for key {key!r}") from None

    def forget(self, partitions: Iterable[int]) -> None:
        doomed = frozenset(partitions)
        for key in [k for k, p in self._of.items() if p in doomed]:
            del self._of[key]


class ChangelogKeyState:
    """:class:`KeyStateBackend` over the changelogged store.

    Records of busy keys (an input in flight) are also kept decoded in memory, since
    they change several times per input; idle keys live only in RocksDB, so the Python
    heap is bounded by the keys in flight, not by all keys ever seen.
    """

    def __init__(self, store: ChangelogStore, partitions: KeyPartitions):
        self._store = store
        self._partitions = partitions
        self._busy: dict[Hashable, KeyRecord] = {}

    def get(self, key: Hashable) -> KeyRecord | None:
        record = self._busy.get(key)
        if record is not None:
            return record
        raw = self._store.get(self._partitions[key], _KEY + _key_bytes(key))
        return None if raw is None else decode_record(KeyRecord, raw)

    def put(self, key: Hashable, record: KeyRecord) -> None:
        # Deferred: a busy key's record changes with every input it accepts or finishes;
        # only the state at flush time is encoded (a hot key's long pending queue would
        # otherwise be re-encoded on every arrival).
        self._store.put_deferred(
            self._partitions[key], _KEY + _key_bytes(key), lambda: encode_record(record)
        )
        if record.current is None:
            self._busy.pop(key, None)
        else:
            self._busy[key] = record

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached records of partitions that moved away."""
        doomed = frozenset(partitions)
        for key in [k for k in self._busy if self._partitions.get(k) in doomed]:
            del self._busy[key]

    def keys(self) -> Iterator[Hashable]:
        for partition in sorted(self._store.assigned()):
            yield from self.keys_of(partition)

    def keys_of(self, partition: int) -> Iterator[Hashable]:
        """Keys with a record in ``partition`` (registers their partition)."""
        for raw_key, _ in self._store.scan(partition, _KEY):
            key = loads(raw_key[len(_KEY) :])
            self._partitions.set(key, partition)
            yield key

    def count(self, partition: int) -> int:
        return self._store.count(partition, _KEY)


class ChangelogActionStateStore:
    """:class:`ActionStateStore` over the changelogged store."""

    def __init__(self, store: ChangelogStore, partitions: KeyPartitions):
        self._store = store
        self._partitions = partitions

    @staticmethod
    def _slot(key: Hashable, seq: int) -> bytes:
        return _ACTION + _key_bytes(key) + b"\0" + struct.pack(">Q", seq)

    def _load(self, key: Hashable, seq: int) -> dict[str, bytes]:
        raw = self._store.get(self._partitions[key], self._slot(key, seq))
        return {} if raw is None else loads(raw)

    def get(self, key: Hashable, seq: int, action: str, event_id: str) -> ActionState | None:
        raw = self._load(key, seq).get(f"{action}\0{event_id}")
        return None if raw is None else decode_record(ActionState, raw)

    def has_input(self, key: Hashable, seq: int) -> bool:
        return self._store.get(self._partitions[key], self._slot(key, seq)) is not None

    def put(self, key: Hashable, seq: int, action: str, event_id: str, state: ActionState) -> None:
        runs = self._load(key, seq)
        runs[f"{action}\0{event_id}"] = encode_record(state)
        self._store.put(self._partitions[key], self._slot(key, seq), dumps(runs))

    def prune(self, key: Hashable, seq: int) -> None:
        """Drop the action state of ``key``'s input ``seq``.

        The operator prunes every finished input, one by one, so older inputs are gone
        already; deleting the one slot keeps pruning O(1) instead of a prefix scan.
        """
        partition = self._partitions[key]
        slot = self._slot(key, seq)
        if self._store.get(partition, slot) is not None:
            self._store.delete(partition, slot)

    def collect_garbage(self, partition: int, key_state: ChangelogKeyState) -> int:
        """Delete action state of inputs that finished but were never pruned (the worker
        died between an input's end and the next commit). Returns how many went."""
        doomed = []
        for raw_key, _ in self._store.scan(partition, _ACTION):
            key = loads(raw_key[len(_ACTION) : -9])
            (seq,) = struct.unpack(">Q", raw_key[-8:])
            self._partitions.set(key, partition)
            record = key_state.get(key)
            if record is None or seq < record.seq or (record.current is None and seq == record.seq):
                doomed.append(raw_key)
        for raw_key in doomed:
            self._store.delete(partition, raw_key)
        return len(doomed)

    def count(self, partition: int) -> int:
        return self._store.count(partition, _ACTION)
