"""Input event ids do not repeat when a topic is recreated (issue 16, small things)."""

from __future__ import annotations

from types import SimpleNamespace

from agentstream.service.keys import input_id


def _record(offset: int = 7, timestamp: int = 1_700_000_000_000, **fields: object) -> object:
    values = {"topic": "in", "partition": 2, "key": b"k", "value": b'"v"'}
    return SimpleNamespace(offset=offset, timestamp=timestamp, **{**values, **fields})


def test_input_ids_are_deterministic_and_differ_for_a_recreated_topic() -> None:
    """Scenario: the same record read twice; then a recreated topic (or a reset
    development broker) putting other records at the same topic, partition and offset.
    We expect: the same record always gets the same id; a record that differs in its
    timestamp, key or value gets another one, so it cannot replay the old record's
    action state."""
    first = input_id(_record())
    assert input_id(_record()) == first
    assert first.startswith("in/2/7/1700000000000/")
    others = {
        input_id(_record(timestamp=1_700_000_000_001)),
        input_id(_record(key=b"other")),
        input_id(_record(value=b'"w"')),
        input_id(_record(key=None)),
        input_id(_record(value=None)),
        input_id(_record(key=b"k\x01", value=b'"v"')),
    }
    assert first not in others and len(others) == 6
