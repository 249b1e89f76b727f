"""Action state on the changelogged store: one store key per action run (``b"r"`` in the
layout of :mod:`agentstream.service.tables`, which re-exports this class)."""

from __future__ import annotations

import struct
from typing import Any

from agentstream.runtime.action_state import ActionState
from agentstream.runtime.records import KeyRecord, decode_record, encode_record
from agentstream.serde import loads
from agentstream.service.tables import (
    _LEGACY_ACTION,
    _RUN,
    ChangelogKeyState,
    _input_key,
    _migrate_runs,
    _Migrations,
    _parse_run_key,
    _run_name,
)
from agentstream.state.changelog import ChangelogStore

__all__ = ["ChangelogActionStateStore"]


class ChangelogActionStateStore:
    """:class:`ActionStateStore` over the changelogged store: one key per action run.

    Which inputs have runs, and their store keys, are listed in memory (``has_input`` is a
    lookup, pruning deletes the listed keys); a partition's listing is read from the store
    when the partition is first used after each assignment (one prefix scan, like the
    garbage collection the worker runs then).
    """

    def __init__(self, store: ChangelogStore):
        self._store = store
        # (slot, seq) -> the store keys of the input's runs.
        self._inputs: dict[tuple[Any, int], set[bytes]] = {}
        # partition -> (the recovery it was listed after, legacy migrations by then)
        self._listed: dict[int, tuple[object, int]] = {}

    def _list(self, partition: int) -> None:
        """Make sure the partition's inputs with runs are listed (after its assignment)."""
        listed = self._listed.get(partition)
        if (
            listed is not None
            and listed[0] is self._store.last_recovery(partition)
            and listed[1] == _Migrations.moved
        ):
            return
        self._relist(partition, [])

    def _relist(self, partition: int, found: list[tuple[Any, int, bytes]]) -> None:
        """List the partition's inputs: ``found`` (slot key, seq, store key) if given, else
        what a scan of the store finds."""
        recovery, moved = self._store.last_recovery(partition), _Migrations.moved
        for ident in [i for i in self._inputs if i[0][0] == partition]:
            del self._inputs[ident]
        if not found:
            found = [
                (*_parse_run_key(raw_key), raw_key)
                for raw_key, _ in self._store.scan(partition, _RUN)
            ]
        for key, seq, raw_key in found:
            self._inputs.setdefault(((partition, key), seq), set()).add(raw_key)
        self._listed[partition] = (recovery, moved)

    def listed(self, partition: int, raw_key: bytes) -> None:
        """List a run stored under ``raw_key`` by someone else (a key that moved here)."""
        self._list(partition)
        key, seq = _parse_run_key(raw_key)
        self._inputs.setdefault(((partition, key), seq), set()).add(raw_key)

    def forget(self, partitions: set[int]) -> None:
        """Stop listing the runs of partitions that moved away (listed again from the
        store if they come back)."""
        for ident in [i for i in self._inputs if i[0][0] in partitions]:
            del self._inputs[ident]
        for partition in partitions:
            self._listed.pop(partition, None)

    def forget_slot(self, slot: Any) -> None:
        """Stop listing one key's runs (it moved away; its entries are garbage here)."""
        for ident in [i for i in self._inputs if i[0] == slot]:
            del self._inputs[ident]

    def get(self, slot: Any, seq: int, action: str, event_id: str) -> ActionState | None:
        raw = self._store.get(slot[0], _input_key(slot[1], seq) + _run_name(action, event_id))
        return None if raw is None else decode_record(ActionState, raw)

    def has_input(self, slot: Any, seq: int) -> bool:
        self._list(slot[0])
        return (slot, seq) in self._inputs

    def runs(self, slot: Any, seq: int) -> dict[tuple[str, str], ActionState]:
        """The recorded runs of one input, by (action, event id), for inspection."""
        prefix = _input_key(slot[1], seq)
        runs = {}
        for raw_key, raw in self._store.scan(slot[0], prefix):
            action, _, event_id = raw_key[len(prefix) :].decode().partition("\0")
            runs[(action, event_id)] = decode_record(ActionState, raw)
        return runs

    def put(self, slot: Any, seq: int, action: str, event_id: str, state: ActionState) -> None:
        partition = slot[0]
        self._list(partition)
        raw_key = _input_key(slot[1], seq) + _run_name(action, event_id)
        written = self._inputs.get((slot, seq))
        if written is None:
            self._inputs[(slot, seq)] = {raw_key}
        else:
            written.add(raw_key)
        self._store.put(partition, raw_key, encode_record(state))

    def prune(self, slot: Any, seq: int) -> None:
        """Drop the action state of the key's input ``seq`` (its listed keys: no scan)."""
        partition = slot[0]
        self._list(partition)
        for raw_key in self._inputs.pop((slot, seq), ()):
            self._store.delete(partition, raw_key)

    def collect_garbage(self, partition: int, key_state: ChangelogKeyState) -> int:
        """Delete action state of inputs that finished but were never pruned (the worker
        died between an input's end and the next commit), and list the inputs still in
        flight. Returns how many store keys went."""
        records: dict[Any, KeyRecord | None] = {}

        def record_of(key: Any) -> KeyRecord | None:
            if key not in records:
                records[key] = key_state.get((partition, key))  # migrates a legacy key
            return records[key]

        def finished(record: KeyRecord | None, seq: int) -> bool:
            return (
                record is None or seq < record.seq or (record.current is None and seq == record.seq)
            )

        doomed = []
        for raw_key, _ in self._store.scan(partition, _LEGACY_ACTION):
            key = loads(raw_key[len(_LEGACY_ACTION) : -9])
            (seq,) = struct.unpack(">Q", raw_key[-8:])
            if not finished(record_of(key), seq):  # a legacy key not read yet
                _migrate_runs(self._store, partition, key, seq)
            doomed.append(raw_key)
        live = []
        for raw_key, _ in self._store.scan(partition, _RUN):
            key, seq = _parse_run_key(raw_key)
            if finished(record_of(key), seq):
                doomed.append(raw_key)
            else:
                live.append((key, seq, raw_key))
        for raw_key in doomed:
            self._store.delete(partition, raw_key)
        self._relist(partition, live)
        return len(doomed)

    def count(self, partition: int) -> int:
        """How many inputs have action state in ``partition``."""
        self._list(partition)
        return sum(1 for (slot, _) in self._inputs if slot[0] == partition)
