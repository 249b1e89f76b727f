"""Event-time progress (the reference's watermark rule), per source partition.

The watermark of a partition is the largest source timestamp T such that every input of
that partition with timestamp <= T has finished. An input still in flight (running or
pending) holds it back, however late its key finishes. It never moves backwards.
"""

from __future__ import annotations

import heapq
from collections import Counter

__all__ = ["EventTimeTracker"]


class _Partition:
    __slots__ = ("done", "in_flight", "removed", "watermark")

    def __init__(self) -> None:
        self.in_flight: list[int] = []  # min-heap of timestamps of unfinished inputs
        self.removed: Counter[int] = Counter()  # lazy deletions from in_flight
        self.done: list[int] = []  # min-heap of finished timestamps above the watermark
        self.watermark: int | None = None


class EventTimeTracker:
    """Tracks the watermark of each partition."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def started(self, partition: int, timestamp: int | None) -> None:
        """An input with ``timestamp`` was accepted (pending or running)."""
        if timestamp is not None:
            heapq.heappush(self._part(partition).in_flight, timestamp)

    def finished(self, partition: int, timestamp: int | None) -> int | None:
        """The input finished; returns the partition's new watermark."""
        if timestamp is None:
            return self.watermark(partition)
        part = self._part(partition)
        part.removed[timestamp] += 1
        heapq.heappush(part.done, timestamp)
        return self._advance(part)

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:  # not setdefault: that would build one on every call
            part = self._parts[partition] = _Partition()
        return part

    def watermark(self, partition: int) -> int | None:
        part = self._parts.get(partition)
        return part.watermark if part else None

    def forget(self, partition: int) -> None:
        """The partition moved to another worker."""
        self._parts.pop(partition, None)

    def partitions(self) -> list[int]:
        return list(self._parts)

    @staticmethod
    def _advance(part: _Partition) -> int | None:
        heap = part.in_flight
        while heap and part.removed[heap[0]] > 0:
            part.removed[heap[0]] -= 1
            if not part.removed[heap[0]]:
                del part.removed[heap[0]]
            heapq.heappop(heap)
        limit = heap[0] if heap else None
        while part.done and (limit is None or part.done[0] < limit):
            ts = heapq.heappop(part.done)
            if part.watermark is None or ts > part.watermark:
                part.watermark = ts
        return part.watermark
