"""Key records encoded for the changelog with each pending input packed once.

A busy key's record holds the inputs waiting behind its current one, and it is written
to the changelog in every flush while the key is busy: under a backlog (ten inputs
queued per key) re-packing them was about a tenth of a worker's CPU. :class:`KeyRecordPacker`
keeps each pending input's bytes while it waits and writes the record around them, the
same bytes as :func:`~agentstream.runtime.codec.encode_record` (a test holds it to that).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Final

import msgpack

from agentstream.runtime.codec import RECORD_VERSION
from agentstream.runtime.records import InputRecord, KeyRecord, encode_record
from agentstream.serde import dumps

__all__ = ["KeyRecordPacker"]

# version byte, then the record's four fields as a msgpack array: seq, current, pending,
# last_offset (KeyRecord's declared order, all packed as they are).
_HEAD: Final = bytes([RECORD_VERSION]) + msgpack.Packer().pack_array_header(4)
_array_header: Final = msgpack.Packer().pack_array_header


class KeyRecordPacker:
    """Encodes key records as ``encode_record`` does, reusing the bytes of each pending
    input packed for the key's previous record."""

    def __init__(self) -> None:
        # slot -> id(input) -> (the input, its bytes): the identity check makes a reused
        # id a miss, and holding the input keeps its id from being reused meanwhile.
        self._packed: dict[Hashable, dict[int, tuple[InputRecord, bytes]]] = {}

    def encode(self, slot: Hashable, record: KeyRecord) -> bytes:
        """``encode_record(record)``; what is cached for ``slot`` is its pending inputs."""
        pending = record.pending
        if len(pending) < 2:  # nothing to reuse
            self._packed.pop(slot, None)
            return encode_record(record)
        before = self._packed.get(slot) or {}
        now: dict[int, tuple[InputRecord, bytes]] = {}
        parts = [
            _HEAD,
            dumps(record.seq, what="key record"),
            dumps(record.current, what="key record"),
            _array_header(len(pending)),
        ]
        for item in pending:
            packed = before.get(id(item))
            if packed is None or packed[0] is not item:
                packed = (item, dumps(item, what="input record"))
            now[id(item)] = packed
            parts.append(packed[1])
        parts.append(dumps(record.last_offset, what="key record"))
        self._packed[slot] = now
        return b"".join(parts)

    def forget(self, slots: Iterable[Hashable]) -> None:
        """Drop what is kept for ``slots`` (idle keys, or keys that moved away)."""
        for slot in slots:
            self._packed.pop(slot, None)

    def forget_partitions(self, partitions: frozenset[int]) -> None:
        """Drop what is kept for the slots, ``(partition, key)``, of ``partitions``."""
        self.forget([s for s in self._packed if s[0] in partitions])  # type: ignore[index]
