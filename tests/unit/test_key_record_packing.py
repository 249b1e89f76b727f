"""The changelog's key records, packed with each pending input's bytes reused, are the
bytes ``encode_record`` writes."""

from __future__ import annotations

import random

from agentstream.runtime.records import KeyRecord, decode_record, encode_record, new_input_record
from agentstream.service._keypack import KeyRecordPacker


def _input(rng: random.Random, offset: int) -> object:
    value = rng.choice([None, "text", {"i": offset, "s": "x" * rng.randrange(40)}, [1, 2.5]])
    return new_input_record(f"k{rng.randrange(3)}", value, f"0-{offset}", offset * 10, 0, offset)


def test_packed_key_records_are_encode_records_bytes() -> None:
    """Scenario: keys whose records take inputs at the tail and start them from the head,
    in random order, packed after every change (as flushes do), with an idle key
    forgotten. We expect: every packing equals ``encode_record`` and decodes back."""
    rng = random.Random(3)
    packer = KeyRecordPacker()
    records = {slot: KeyRecord() for slot in [(0, "a"), (1, "b"), (1, 7)]}
    offset = 0
    for _ in range(2000):
        slot = rng.choice(list(records))
        record = records[slot]
        if rng.random() < 0.55:
            offset += 1
            item = _input(rng, offset)
            if record.current is None:
                record.current = item  # type: ignore[assignment]
            else:
                record.pending.append(item)  # type: ignore[arg-type]
            record.last_offset = offset
        elif record.current is not None:
            record.current = record.pending.pop(0) if record.pending else None
            record.seq += 1
        if record.current is None and rng.random() < 0.5:
            packer.forget([slot])
        packed = packer.encode(slot, record)
        assert packed == encode_record(record)
        assert decode_record(KeyRecord, packed) == record
    packer.forget_partitions(frozenset({1}))
    assert packer.encode((1, "b"), records[(1, "b")]) == encode_record(records[(1, "b")])
