"""The counts of one histogram child: what a :class:`LoopHistogram` observation updates.

Its own module so that setup.py compiles it with the runtime's hot path (one observation
per action run).
"""

from __future__ import annotations

import bisect
from typing import Final

__all__ = ["HistogramCounts"]

_bisect_left: Final = bisect.bisect_left  # Final: kept in a C variable when compiled


class HistogramCounts:
    """Per-bucket counts and the sum of one label combination (not thread-safe: the
    event loop's thread observes)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[_bisect_left(self.bounds, value)] += 1
        self.sum += value
