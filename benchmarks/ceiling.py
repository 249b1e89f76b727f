"""The CPU-bound ceiling of ``llm5k``: the best rate a worker spending the measured CPU per
input could reach on one core, given the run's shape.

The shape costs rate even to a perfect worker: the inputs of the first wave start one
after another (each costs CPU), every input waits its call, and from the first output to the
last the run also holds the end of the first wave's stagger and the last input's whole
call. :func:`simulate` runs that: one core serving, first come first served, the start of an
input (``start_s`` of CPU, then its call) and its end (``end_s``, then the key's next
input starts); no latency other than the calls. The rate is measured as the benchmark
measures it: inputs after the first wave over the time from the first output to the last.
"""

from __future__ import annotations

import collections
import heapq

__all__ = ["SPLITS", "ceiling", "simulate"]

SPLITS = (0.25, 0.5, 0.75)
"""Shares of an input's CPU spent at its end tried; the ceiling is the best of them."""


def simulate(start_s: float, end_s: float, keys: int, waves: int, call_s: float) -> float:
    """The rate (inputs/s) of the ideal worker described in the module."""
    now = 0.0
    ready: collections.deque[tuple[bool, int, int]] = collections.deque(
        (True, key, 1) for key in range(keys)
    )
    calls: list[tuple[float, int, int]] = []  # (when the call returns, key, wave)
    first = last = None
    while ready or calls:
        while calls and calls[0][0] <= now:
            _, key, wave = heapq.heappop(calls)
            ready.append((False, key, wave))
        if not ready:
            now = calls[0][0]
            continue
        starting, key, wave = ready.popleft()
        if starting:
            now += start_s
            heapq.heappush(calls, (now + call_s, key, wave))
            continue
        now += end_s
        first = now if first is None else first
        last = now
        if wave < waves:
            ready.append((True, key, wave + 1))
    assert first is not None and last is not None and last > first
    return (keys * waves - keys) / (last - first)


def ceiling(cpu_us_per_input: float, keys: int, waves: int, call_s: float) -> float:
    """The ceiling for a run whose CPU per counted input was ``cpu_us_per_input`` (its CPU
    from the first output to the last over the inputs after the first wave).

    That interval holds the ends of the first wave, and the starts and ends of the
    others: (keys x end + (waves - 1) x keys x (start + end)) / ((waves - 1) x keys) per
    counted input; each split solves it for start and end.
    """
    best = 0.0
    for split in SPLITS:
        # per counted input: start + end x (1 + 1 / (waves - 1)), with end = split x total
        total = cpu_us_per_input / ((1 - split) + split * (1 + 1 / (waves - 1))) / 1e6
        best = max(best, simulate((1 - split) * total, split * total, keys, waves, call_s))
    return best
