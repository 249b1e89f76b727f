"""The counts of one histogram child: what a :class:`LoopHistogram` observation updates.

Its own module so that setup.py compiles it with the runtime's hot path (one observation
per action run).
"""

from __future__ import annotations

__all__ = ["HistogramCounts"]


class HistogramCounts:
    """Per-bucket counts and the sum of one label combination (not thread-safe: the
    event loop's thread observes)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect.bisect_left by hand: compiled, a scan of unboxed floats beats bisect's
        # generic comparisons (most observations land in the first few buckets).
        bounds = self.bounds
        index, last = 0, len(bounds) - 1
        while index < last and value > bounds[index]:
            index += 1
        self.counts[index] += 1
        self.sum += value
