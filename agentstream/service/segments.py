"""Long lists in short-term memory, stored in segments: appending writes what was appended.

A chat history grows by a message per input. Stored as one value, it would be rewritten
whole on every input, so an input's cost would grow with the history. A list that an input
extends (see ``MemoryStore.extended``) and that packs to at least :data:`MIN_BYTES` is kept
instead as segments, and its ``b"m"`` record holds a small header::

    b"m" + K + path           -> HEADER + [generation, [start of each segment], length]
    b"l" + K + P + gen + start -> the items from ``start`` up to the next segment's start

(``P`` is the path behind its length in 4 bytes; ``gen`` and ``start`` are 4 bytes
big-endian.) Appending writes one segment, then the header. A header is written after the
segments it lists, and the changelog keeps that order, so a crash leaves a header that
lists segments which are all there. Rewriting the list (a plain ``set``, or every
:data:`MAX_SEGMENTS` appends to bound the segments a load reads) writes it as one segment
of the next generation, then the header, then deletes the other generations' segments:
the switch is the header, one record. A list that stops being a list, or goes away, loses
its segments before its new value is written (that input's replay sets it anew).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from agentstream.serde import dumps, loads
from agentstream.state.changelog import ChangelogStore

__all__ = ["HEADER", "MAX_SEGMENTS", "MIN_BYTES", "SEGMENT", "load", "remove", "write"]

SEGMENT: Final = b"l"
HEADER: Final = b"L"
"""The first byte of a segmented list's header (a plain value's is the record version)."""
MAX_SEGMENTS: Final = 32
MIN_BYTES: Final = 8192
"""A shorter list stays one plain value: two records per append would cost more."""


class Layout(NamedTuple):
    generation: int
    starts: list[int]
    length: int


def _prefix(kid: bytes, path: str) -> bytes:
    encoded = path.encode()
    return SEGMENT + kid + struct.pack(">I", len(encoded)) + encoded


def _key(kid: bytes, path: str, generation: int, start: int) -> bytes:
    return _prefix(kid, path) + struct.pack(">II", generation, start)


def layout(raw: bytes | None) -> Layout | None:
    """The header in a ``b"m"`` record, None for a plain value (or no record)."""
    if raw is None or raw[:1] != HEADER:
        return None
    generation, starts, length = loads(raw[1:])
    return Layout(generation, starts, length)


def _header(generation: int, starts: list[int], length: int) -> bytes:
    return HEADER + dumps([generation, starts, length], what="segment header")


def load(
    store: ChangelogStore,
    partition: int,
    kid: bytes,
    path: str,
    found: Layout,
    unpack: Callable[[bytes], Any],
) -> list[Any] | None:
    """The list a header describes; None if a segment is missing (not written yet)."""
    items: list[Any] = []
    for start in found.starts:
        raw = store.get(partition, _key(kid, path, found.generation, start))
        if raw is None:
            return None
        items += unpack(raw)
    return items


def write(
    store: ChangelogStore,
    partition: int,
    kid: bytes,
    path: str,
    value_key: bytes,
    value: Any,
    length: int | None,
    stored: Layout | None,
    pack: Callable[[Any], bytes],
) -> bool:
    """Store ``value`` at ``path`` (whose ``b"m"`` record is ``value_key``); True if it is
    kept in segments. ``length``: how many of its first items are the ones loaded (None:
    it was set); ``stored``: the header stored now, if the path is kept in segments."""
    if (
        type(value) is list
        and stored is not None
        and length == stored.length
        and len(stored.starts) < MAX_SEGMENTS
    ):
        if len(value) > stored.length:
            segment = _key(kid, path, stored.generation, stored.length)
            store.put(partition, segment, pack(value[stored.length :]))
            header = _header(stored.generation, [*stored.starts, stored.length], len(value))
            store.put(partition, value_key, header)
        return True
    packed = pack(value)
    if (
        type(value) is list
        and (length is not None or stored is not None)
        and len(packed) >= MIN_BYTES
    ):
        generation = stored.generation + 1 if stored is not None else 1
        store.put(partition, _key(kid, path, generation, 0), packed)
        store.put(partition, value_key, _header(generation, [0], len(value)))
        _drop(store, partition, kid, path, generation)
        return True
    if stored is not None:
        _drop(store, partition, kid, path, None)
    store.put(partition, value_key, packed)
    return False


def remove(store: ChangelogStore, partition: int, kid: bytes, path: str) -> None:
    """Delete the segments of ``path`` (its ``b"m"`` record is the caller's)."""
    _drop(store, partition, kid, path, None)


def _drop(store: ChangelogStore, partition: int, kid: bytes, path: str, keep: int | None) -> None:
    """Delete the segments of ``path`` but those of generation ``keep`` (and those a crash
    left behind, which no header lists)."""
    prefix = _prefix(kid, path)
    at = len(prefix)
    doomed = [
        k
        for k, _ in store.scan(partition, prefix)
        if keep is None or struct.unpack_from(">I", k, at)[0] != keep
    ]
    for k in doomed:
        store.delete(partition, k)
