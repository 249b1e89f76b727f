"""Partition assignment that keeps an app's topics co-partitioned by partition number.

Kafka's range assignor splits each topic on its own, so two topics co-assign only while
their partition counts are equal. When the input topic grows, its count runs ahead of the
internal events and changelog topics until a worker grows them too; this assignor gives
partition ``i`` of every subscribed topic to the same member whatever the counts, so input
``i`` and internal ``i`` always travel together (and a worker can tell the partitions it
must leave alone until the others catch up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

__all__ = ["CoPartitionedAssignor"]


class CoPartitionedAssignor(AbstractPartitionAssignor):
    """Partition ``i`` of every topic goes to one member: members in order, partition
    numbers in contiguous ranges (the range assignor's split when the counts are equal)."""

    name = "agentstream-copartitioned"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        subscribed = sorted({t for m in members.values() for t in m.subscription})
        counts = {t: len(cluster.partitions_for_topic(t) or ()) for t in subscribed}
        width = max(counts.values(), default=0)
        order = sorted(members)
        owned: dict[str, dict[str, list[int]]] = {m: {} for m in order}
        for i in range(width):
            member = order[i * len(order) // width]
            for topic in subscribed:
                if i < counts[topic] and topic in members[member].subscription:
                    owned[member].setdefault(topic, []).append(i)
        return {
            member: ConsumerProtocolMemberAssignment(cls.version, sorted(topics.items()), b"")
            for member, topics in owned.items()
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
