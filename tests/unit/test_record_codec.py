"""One versioned codec for every stored record (agentstream.runtime.records)."""

from __future__ import annotations

import msgpack
import pytest

from agentstream import SerializationError
from agentstream.runtime.action_state import ActionState, CallRecord
from agentstream.runtime.records import (
    RECORD_VERSION,
    InputRecord,
    KeyRecord,
    LegacyKeyRecord,
    decode_record,
    encode_record,
    split_legacy,
)

KEY_RECORD = KeyRecord(
    seq=4,
    current=InputRecord("k", {"q": "hi"}, "in/0/4", 1_700_000_000_000, 2, 4),
    pending=[InputRecord("k", [1, 2], "in/0/5", None, 2, 5)],
    last_offset=5,
)
ACTION_STATE = ActionState(
    True,
    (("set", "short", "n", 2),),
    (b"event",),
    (CallRecord("m.f", "d", "ok", result=b"\x91\x01"), CallRecord("m.g", "e", "started")),
)


@pytest.mark.parametrize(
    ("cls", "record"),
    [(KeyRecord, KEY_RECORD), (KeyRecord, KeyRecord()), (ActionState, ACTION_STATE)],
    ids=["key-busy", "key-empty", "action-state"],
)
def test_every_record_round_trips_behind_its_version_byte(cls: type, record: object) -> None:
    data = encode_record(record)
    assert data[0] == RECORD_VERSION
    assert decode_record(cls, data) == record


def test_records_read_back_typed_as_written() -> None:
    back = decode_record(KeyRecord, encode_record(KEY_RECORD))
    assert isinstance(back.current, InputRecord) and back.current.partition == 2
    assert isinstance(back.pending, list) and isinstance(back.pending[0], InputRecord)
    state = decode_record(ActionState, encode_record(ACTION_STATE))
    assert isinstance(state.calls, tuple) and isinstance(state.calls[0], CallRecord)
    assert isinstance(state.memory_updates[0], tuple) and isinstance(state.sent_events, tuple)


MEMORY = {"values": {"n": 1, "raw": b"\x00"}, "objects": []}
LEGACY_FIELDS = [4, list(KEY_RECORD.current), [list(KEY_RECORD.pending[0])], MEMORY, 5]


@pytest.mark.parametrize(
    "legacy",
    [msgpack.packb(LEGACY_FIELDS), b"\x01" + msgpack.packb(LEGACY_FIELDS)],
    ids=["unversioned", "version-1"],
)
def test_a_key_record_with_memory_inside_splits_into_record_and_memory(legacy: bytes) -> None:
    """Scenario: a key record written before version 2 (the key's whole memory inside it;
    version 0 is a bare msgpack array) is read after an upgrade. We expect: read as the
    legacy record, it splits into today's record and the memory; read as today's record,
    it is refused, saying how to read it (the state tables migrate it)."""
    record, memory = split_legacy(decode_record(LegacyKeyRecord, legacy))
    assert record == KEY_RECORD and memory == MEMORY
    with pytest.raises(SerializationError, match="LegacyKeyRecord"):
        decode_record(KeyRecord, legacy)


def test_a_version_1_key_record_without_memory_migrates() -> None:
    legacy = b"\x01" + msgpack.packb([4, None, [], None, 5])
    assert decode_record(KeyRecord, legacy) == KeyRecord(seq=4, last_offset=5)


def test_a_record_from_a_newer_version_is_refused_clearly() -> None:
    data = encode_record(KEY_RECORD)
    with pytest.raises(
        SerializationError, match=r"key record was written in record format version 3"
    ):
        decode_record(KeyRecord, bytes([3]) + data[1:])


def test_missing_trailing_fields_take_their_defaults_and_extra_ones_are_refused() -> None:
    version = bytes([RECORD_VERSION])
    assert decode_record(KeyRecord, version + msgpack.packb([3])) == KeyRecord(seq=3)
    with pytest.raises(SerializationError, match="5 fields, this version knows 4"):
        decode_record(KeyRecord, version + msgpack.packb([3, None, [], -1, "new"]))


@pytest.mark.parametrize(
    "data", [b"", b"\x01", b"\x01\xc1", b"\x01\x07", b"\x01" + msgpack.packb([[1]] * 4)]
)
def test_malformed_bytes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        decode_record(ActionState, data)


def test_only_registered_types_are_records() -> None:
    with pytest.raises(TypeError, match="not a registered record type"):
        encode_record(object())
