"""The pieces of a migration that need no broker: which partitions a key may move between,
which migration record wins, co-partitioned assignment while topic counts differ, and the
offsets a worker may commit while it holds records (issue 13; the whole of it runs on real
Kafka in tests/chaos/test_rescale.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from agentstream.service.assignor import CoPartitionedAssignor
from agentstream.service.handoff import _Held
from agentstream.service.layout import Layout, _layout_of, partition_for
from agentstream.service.migration import Migration


def test_sources_and_destinations_follow_murmur2_for_any_growth() -> None:
    """Scenario: layouts 4 -> 8 and 8 -> 12, and 1000 keys.
    We expect: every key that moves goes from a listed source to a listed destination;
    doubling only moves keys to the new partitions."""
    for before, after in ((4, 8), (8, 12), (3, 5)):
        layout = Layout(after, before)
        for i in range(1000):
            key = f"key-{i}".encode()
            home, destination = partition_for(key, before), partition_for(key, after)
            if home != destination:
                assert home in layout.sources(destination)
                assert destination in layout.destinations(home)
    assert [Layout(8, 4).sources(q) for q in range(8)] == [[], [], [], [], [0], [1], [2], [3]]


def test_the_first_record_of_a_migration_wins_and_moved_partitions_add_up() -> None:
    """Scenario: two workers began the same migration with different fences.
    We expect: everyone reads the first one's fences; moved partitions are counted."""
    first = {"partitions": 8, "previous": 4, "fences": [10, 11, 12, 13]}
    second = {"partitions": 8, "previous": 4, "fences": [20, 21, 22, 23]}
    records: list[tuple[str, Any]] = [
        ("layout/8/a", first),
        ("layout/8/b", second),
        *((f"moved/8/{q}", []) for q in range(8)),
    ]
    layout = _layout_of(records)
    assert layout is not None
    assert layout.fences == (10, 11, 12, 13) and not layout.migrating
    assert _layout_of(records[:5]) is not None and _layout_of(records[:5]).migrating  # type: ignore[union-attr]
    assert _layout_of([]) is None


def test_input_and_internal_partitions_go_together_while_their_counts_differ() -> None:
    """Scenario: the input topic has 8 partitions, the internal topic still 4; two members.
    We expect: partition i of both topics goes to the same member, ranges as Kafka's range
    assignor makes them when the counts are equal."""
    counts = {"in": 8, "events": 4}
    cluster: Any = SimpleNamespace(partitions_for_topic=lambda t: set(range(counts[t])))
    members = {m: ConsumerProtocolMemberMetadata(0, ["in", "events"], b"") for m in ("m-a", "m-b")}
    assignment = CoPartitionedAssignor.assign(cluster, members)
    owned = {m: dict(a.assignment) for m, a in assignment.items()}
    assert owned["m-a"] == {"in": [0, 1, 2, 3], "events": [0, 1, 2, 3]}
    assert owned["m-b"] == {"in": [4, 5, 6, 7]}


def test_commits_never_pass_a_held_record_and_are_a_snapshot() -> None:
    """Scenario: a worker holds an input of partition 5 at offset 40 and a forwarded one of
    internal partition 5 at offset 7, while its positions are further on.
    We expect: the offsets it may commit stop at the held records, and are a copy (the
    positions move on while a commit flushes)."""
    worker: Any = SimpleNamespace(app=SimpleNamespace(input_topic="in", internal_topic="ev"))
    migration = Migration(worker)
    positions = {TopicPartition("in", 5): 50, TopicPartition("ev", 5): 9}
    assert migration.pinned(positions) == positions
    assert migration.pinned(positions) is not positions
    held = _Held(direct=[SimpleNamespace(offset=40)], forwarded=[(7, None, "id")])
    migration._held[5] = {1: held}
    assert migration.pinned(positions) == {TopicPartition("in", 5): 40, TopicPartition("ev", 5): 7}
