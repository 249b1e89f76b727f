"""Which input partitions read: the limit on buffered inputs, shared between partitions.

``max_buffered_inputs`` bounds the inputs a worker holds (accepted, not finished). Each
input partition has a share of it, the limit over the input partitions assigned, and the
share of a partition with records to read is reserved for it: the others may fill the
buffer only up to the limit less the reservations. Without the reservations, the
partitions read first fill the buffer with their keys' later inputs (queued behind each
key's input in progress), and the keys of a partition not yet read wait for those queues
to drain before they start: with 5,000 keys awaiting 1 s calls, a whole partition
started more than a second late. A partition with nothing to read reserves nothing, so
one busy partition still has the whole buffer.

A fetch takes at most a share (and at least :data:`MIN_FETCH`, for the internal topic), so
the buffer holds at most the limit and a share, or the limit and one fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["over_share"]

MIN_FETCH = 100
"""The fewest records a fetch may take, so that the internal topic keeps flowing."""


def over_share(
    limit: int,
    total: int,
    counts: Mapping[Any, int],
    inputs: Collection[Any],
    backlog: Callable[[Any], bool],
) -> tuple[set[Any], int]:
    """(the partitions of ``inputs`` to pause, how many records the next fetch may take).

    ``total``: the inputs in flight; ``counts``: those by partition (``tp.partition``);
    ``backlog(tp)``: whether ``tp`` may have records to read.
    """
    share = -(-limit // max(1, len(inputs)))
    if share < MIN_FETCH:  # shares smaller than a fetch cannot be kept: the limit alone
        return (set(inputs) if total >= limit else set()), max(limit - total, MIN_FETCH)
    reserved = 0
    for tp in inputs:
        held = counts.get(tp.partition, 0)
        if held < share and backlog(tp):
            reserved += share - held
    # A fetch takes up to a share: it drains partition after partition, so a larger one
    # could fill the buffer from the first few before the reservations are looked at.
    if total + reserved < limit:
        return set(), max(min(share, limit - total), MIN_FETCH)
    # Near the limit, a partition reads only if it lacks a whole fetch of its share. All
    # pause only while each holds inputs, which finish.
    short = {tp: share - counts.get(tp.partition, 0) for tp in inputs}
    over = {tp for tp, lack in short.items() if lack < MIN_FETCH}
    room = sum(lack for tp, lack in short.items() if tp not in over)
    return over, max(min(share, room), MIN_FETCH)
