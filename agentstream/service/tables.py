"""The operator's state on a :class:`ChangelogStore`: key records, memory and action state.

Layout in each partition's store (``K`` is the record key, msgpack-encoded, behind its
length in 4 bytes; ``seq`` is 8 bytes big-endian)::

    b"k" + key (msgpack)            -> KeyRecord: seq, current and pending inputs, offset
    b"i" + K                        -> memory index: [value paths, object paths, lists
                                       kept in segments]
    b"m" + K + path                 -> one short-term memory value (or a list's header)
    b"l" + K + P + gen + start      -> a segment of a long list (service.segments)
    b"r" + K + seq + action\\0event -> ActionState of one action run, written once

An input's cost follows what it changes: the key record is small; the memory paths an
input wrote (and only those) are written when it finishes, the index only when the set of
paths changed; each action run is written once under its own key. The inputs with runs
and their keys are listed in memory (one prefix scan of a partition after its
assignment): ``has_input`` is a lookup, and pruning deletes the listed keys.

Design note (one transition, several changelog records)::

    finish of input n:  b"m" paths n changed ─► b"i" (if the paths changed) ─► b"k"
    (the pending writes are produced in the order of their last write, and Kafka keeps
    a partition's order, so any prefix of the changelog a crash leaves holds all of
    n's action runs before any memory n wrote, and n's memory before its finish)

A crash that cuts n's finish in half leaves ``b"k"`` saying n is current while some of
n's memory writes are stored. Recovery re-runs n: every action of n completed (memory is
written only at the finish), so each replays from its record, and a recorded memory
update is an assignment: replaying them in order over memory holding some of n's writes
gives what it gave over the memory of n's start (``MemoryStore.apply`` with replay).
Memory is never written mid-input, so an action that runs for real always sees the memory
of its input's start plus the writes of the actions before it.

Older data directories and changelogs (record version 1: the whole memory inside the key
record, one value for all of an input's action state under ``b"a" + key + \\0 + seq``)
are migrated as they are read: a key's record, memory and current input's action state
on its first read; the rest is garbage collected when the partition is assigned.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Final

from agentstream.errors import SerializationError
from agentstream.runtime.memory import MemoryStore
from agentstream.runtime.records import (
    RECORD_VERSION,
    InputRecord,
    KeyRecord,
    LegacyKeyRecord,
    decode_record,
    encode_record,
    split_legacy,
)
from agentstream.serde import dumps, loads
from agentstream.service import segments
from agentstream.service._keypack import KeyRecordPacker
from agentstream.state.changelog import ChangelogStore

__all__ = ["ChangelogActionStateStore", "ChangelogKeyState", "Slot"]

_KEY: Final = b"k"
_INDEX: Final = b"i"
_MEMORY: Final = b"m"
_RUN: Final = b"r"
_EMITTED: Final = b"o"  # exactly-once: the outputs sent (service.transactions)
_LEGACY_ACTION: Final = b"a"  # version 1: all of an input's action state in one value
_VALUE_VERSION: Final = bytes([RECORD_VERSION])
_MISSING: Final[Any] = object()


def _key_bytes(key: Hashable) -> bytes:
    return dumps(key, what="record key")


def _kid(key: Hashable) -> bytes:
    """The record key as a self-delimiting prefix: its length, then its msgpack bytes."""
    packed = _key_bytes(key)
    return struct.pack(">I", len(packed)) + packed


def _input_key(key: Hashable, seq: int) -> bytes:
    return _RUN + _kid(key) + struct.pack(">Q", seq)


def _run_name(action: str, event_id: str) -> bytes:
    return f"{action}\0{event_id}".encode()


def _pack(value: Any, what: str) -> bytes:
    return _VALUE_VERSION + dumps(value, what=what)


def _unpack(raw: bytes, what: str) -> Any:
    if raw[:1] != _VALUE_VERSION:
        raise SerializationError(
            f"{what} was written in record format version {raw[:1].hex() or 'none'}; this "
            f"version of agentstream reads version {RECORD_VERSION} (upgrade it)"
        )
    return loads(raw[1:])


def _index(raw: bytes) -> tuple[list[str], list[str], list[str]]:
    """A memory index: value paths, object paths, paths kept in segments (none before
    segments existed)."""
    parts = _unpack(raw, "memory index")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else []


def _segment_packer(path: str) -> Callable[[Any], bytes]:
    """Packs the value at ``path``, or a run of its items (named after it if it fails)."""
    what = f"memory value {path!r}"
    return lambda value: _pack(value, what)


def _unpack_segment(raw: bytes) -> Any:
    return _unpack(raw, "memory segment")


Slot = tuple[int, Hashable]
"""A key's identity in the worker's state: (input partition, record key)."""


class ChangelogKeyState:
    """:class:`KeyStateBackend` over the changelogged store.

    Records of busy keys (an input in flight) are also kept decoded in memory, since
    they change several times per input, and so is their memory as of their last finished
    input; idle keys live only in RocksDB, so the Python heap is bounded by the keys in
    flight, not by all keys ever seen.
    """

    def __init__(self, store: ChangelogStore):
        self._store = store
        self._busy: dict[Slot, KeyRecord] = {}
        self._busy_memory: dict[Slot, dict[str, Any] | None] = {}
        self._packer = KeyRecordPacker()

    def get(self, slot: Any) -> KeyRecord | None:
        record = self._busy.get(slot)
        if record is not None:
            return record
        raw = self._store.get(slot[0], _KEY + _key_bytes(slot[1]))
        if raw is None:
            return None
        if raw[:1] == _VALUE_VERSION:
            return decode_record(KeyRecord, raw)
        return self._migrate(slot, raw)

    def put(self, slot: Any, record: KeyRecord, memory: MemoryStore | None = None) -> None:
        partition = slot[0]
        if memory is not None:
            self._write_memory(partition, _kid(slot[1]), memory)
        # Deferred: a busy key's record changes with every input it accepts or finishes;
        # only the state at flush time is encoded (a hot key's long pending queue would
        # otherwise be re-encoded on every arrival). Written after the memory: see above.
        self._store.put_deferred(
            partition, _KEY + _key_bytes(slot[1]), lambda: self._packer.encode(slot, record)
        )
        if record.current is None:
            self._busy.pop(slot, None)
            self._busy_memory.pop(slot, None)
            self._packer.forget((slot,))
        else:
            self._busy[slot] = record
            if memory is not None:
                self._busy_memory[slot] = memory.dump()

    def memory(self, slot: Any) -> dict[str, Any] | None:
        state = self._busy_memory.get(slot, _MISSING)
        if state is not _MISSING:
            return state
        partition, kid = slot[0], _kid(slot[1])
        index = self._store.get(partition, _INDEX + kid)
        if index is None:
            if slot in self._busy or self.get(slot) is None:  # get() migrates a legacy key
                return None
            index = self._store.get(partition, _INDEX + kid)
            if index is None:
                return None
        paths, objects, _ = _index(index)
        values = {}
        for path in paths:
            raw = self._store.get(partition, _MEMORY + kid + path.encode())
            if raw is None:  # listed, but a crash cut its write: replay writes it
                continue
            found = segments.layout(raw)
            if found is None:
                values[path] = _unpack(raw, f"memory value {path!r}")
                continue
            items = segments.load(self._store, partition, kid, path, found, _unpack_segment)
            if items is not None:
                values[path] = items
        return {"values": values, "objects": objects}

    def _write_memory(self, partition: int, kid: bytes, memory: MemoryStore) -> None:
        """Write the paths ``memory`` touched (and the index, if the set of paths changed)."""
        touched = memory.touched
        if not touched:
            return
        store = self._store
        index_key = _INDEX + kid
        raw = store.get(partition, index_key)
        paths: set[str]
        objects: set[str]
        segmented: set[str]
        if raw is None:
            paths, objects, segmented = set(), set(), set()
        else:
            paths, objects, segmented = (set(part) for part in _index(raw))
        changed = False  # the index: whether a path joins or leaves one of its lists
        values, now_objects, extended = memory.values, memory.objects, memory.extended
        for path in sorted(touched):
            value_key = _MEMORY + kid + path.encode()
            stored = segments.layout(store.get(partition, value_key)) if path in segmented else None
            if path in values:
                if path not in paths:
                    paths.add(path)
                    changed = True
                pack = _segment_packer(path)
                length = extended.get(path)
                kept = segments.write(
                    store, partition, kid, path, value_key, values[path], length, stored, pack
                )
                if kept and path not in segmented:
                    segmented.add(path)
                    changed = True
                elif not kept and path in segmented:
                    segmented.discard(path)
                    changed = True
            else:
                if path in paths:
                    paths.discard(path)
                    changed = True
                if path in segmented:
                    segments.remove(store, partition, kid, path)
                    segmented.discard(path)
                    changed = True
                store.delete(partition, value_key)
            if path in now_objects:
                if path not in objects:
                    objects.add(path)
                    changed = True
            elif path in objects:
                objects.discard(path)
                changed = True
        if changed:
            if paths or objects:
                index = [sorted(paths), sorted(objects)]
                if segmented:
                    index.append(sorted(segmented))
                store.put(partition, index_key, _pack(index, "index"))
            else:
                store.delete(partition, index_key)

    def _migrate(self, slot: Any, raw: bytes) -> KeyRecord:
        """Rewrite a key stored by version 1 (memory inside its record; its current
        input's action state in one value) in today's layout; returns its record."""
        partition, key = slot
        record, state = split_legacy(decode_record(LegacyKeyRecord, raw))
        if state is not None:
            memory = MemoryStore("short", state)
            memory.touched = set(memory.values) | set(memory.objects)
            self._write_memory(partition, _kid(key), memory)
        if record.current is not None:
            _migrate_runs(self._store, partition, key, record.seq)
        self._store.put(partition, _KEY + _key_bytes(key), encode_record(record))
        return record

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached records of partitions that moved away."""
        doomed = frozenset(partitions)
        for slot in [s for s in self._busy if s[0] in doomed]:
            del self._busy[slot]
        for slot in [s for s in self._busy_memory if s[0] in doomed]:
            del self._busy_memory[slot]
        self._packer.forget_partitions(doomed)

    def forget_slot(self, slot: Slot) -> None:
        """Drop the cached record of one key (it moved to another partition)."""
        self._busy.pop(slot, None)
        self._busy_memory.pop(slot, None)
        self._packer.forget((slot,))

    def export(self, slot: Slot) -> list[tuple[bytes, bytes]]:
        """Every stored entry of one key: its record, memory and its current input's runs."""
        partition, key = slot
        record = self.get(slot)  # migrates a legacy key
        kb, kid = _key_bytes(key), _kid(key)
        entries = [
            (k, v)
            for k in (_KEY + kb, _INDEX + kid, _EMITTED + kb)
            if (v := self._store.get(partition, k)) is not None
        ]
        entries += self._store.scan(partition, _MEMORY + kid)
        entries += self._store.scan(partition, segments.SEGMENT + kid)
        if record is not None and record.current is not None:
            entries += self._store.scan(partition, _input_key(key, record.seq))
        return entries

    def adopt(self, slot: Slot, entries: list[tuple[bytes, bytes]], runs: Any) -> None:
        """Store the entries another partition exported for one key (see :meth:`export`),
        replacing what this partition held for it: its inputs now come from this partition
        (their old offsets mean nothing here)."""
        partition = slot[0]
        for raw_key, _ in self.export(slot):
            if raw_key[:1] != _RUN:
                self._store.delete(partition, raw_key)
        self.forget_slot(slot)
        for raw_key, value in entries:
            if raw_key[:1] == _KEY:
                record = decode_record(KeyRecord, value)
                record.current = _here(record.current, partition)
                record.pending = [_here(r, partition) for r in record.pending]
                record.last_offset = -1
                value = encode_record(record)
            elif raw_key[:1] == _RUN:
                runs.listed(partition, raw_key)
            self._store.put(partition, raw_key, value)

    def keys(self) -> Iterator[Slot]:
        for partition in sorted(self._store.assigned()):
            yield from self.keys_of(partition)

    def keys_of(self, partition: int) -> Iterator[Slot]:
        """Slots of the keys with a record in ``partition``."""
        for raw_key, _ in self._store.scan(partition, _KEY):
            yield (partition, loads(raw_key[len(_KEY) :]))

    def count(self, partition: int) -> int:
        return self._store.count(partition, _KEY)


def _here(record: InputRecord | None, partition: int) -> Any:
    """An accepted input as if it had come from ``partition`` (no offset to dedupe by)."""
    return None if record is None else record._replace(partition=partition, offset=None)


def _legacy_input_key(key: Hashable, seq: int) -> bytes:
    return _LEGACY_ACTION + _key_bytes(key) + b"\0" + struct.pack(">Q", seq)


class _Migrations:
    """How many inputs' legacy action state moved (a listing made before is out of date)."""

    moved = 0


def _migrate_runs(store: ChangelogStore, partition: int, key: Hashable, seq: int) -> None:
    """Rewrite the version-1 action state of ``key``'s input ``seq`` one run per key (the
    records themselves are version-1 ActionState bytes, which decode as they are)."""
    legacy_key = _legacy_input_key(key, seq)
    raw = store.get(partition, legacy_key)
    if raw is None:
        return
    prefix = _input_key(key, seq)
    for name, state in loads(raw).items():
        store.put(partition, prefix + name.encode(), state)
    store.delete(partition, legacy_key)
    _Migrations.moved += 1


def _parse_run_key(raw_key: bytes) -> tuple[Any, int]:
    """(record key, seq) of a ``b"r"`` key."""
    (length,) = struct.unpack_from(">I", raw_key, 1)
    start = 5 + length
    (seq,) = struct.unpack_from(">Q", raw_key, start)
    return loads(raw_key[5:start]), seq


# The action-state half of the layout, in its own module (it uses the helpers above).
from agentstream.service.run_tables import ChangelogActionStateStore  # noqa: E402
