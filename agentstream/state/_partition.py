"""One partition's RocksDB database: the changes applied from its changelog, and in the
same WriteBatch the changelog offset they were applied up to (so "database + changelog from
that offset + 1" is always the partition's whole state).

RocksDB's write-ahead log is off, as in Kafka Streams: the changelog is the log. A crash
loses the memtables, and the database reopens as of its last flush, whose offset is flushed
with it (``atomic_flush``: the data and the offset's column family flush together); the
recovery replays the changelog from there. With the log on, every value was written twice
by the worker's thread: a chat history of 100 KB cost 3 times the CPU to store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteBufferManager, WriteOptions

from agentstream.errors import StateStoreError

__all__ = ["PartitionDB", "open_partition"]

logger = logging.getLogger(__name__)

_META_CF = "agentstream-meta"
_APPLIED_OFFSET = b"changelog-offset"

MEMTABLE_BUDGET_BYTES = 32 * 1024 * 1024
"""The memtables of every database the process has open, together: past 90 % of it the
database written to flushes one (RocksDB's WriteBufferManager, no stalls). Without it a
worker's memtables grow with the partitions it owns (2 x 16 MiB each): 4 partitions held
25-48 MiB of them at the peak of 100,000 keys."""

_MEMTABLES = WriteBufferManager(MEMTABLE_BUDGET_BYTES, False)

MEMTABLE_BLOCK_BYTES = 2 * 1024 * 1024
"""A memtable's allocations from the C heap (RocksDB's default for 16 MiB memtables, set
so the worker's allocator settings can rely on it: see agentstream.service._malloc)."""


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    # One database per partition: RocksDB's 64 MiB memtables per database add up to most
    # of a worker's memory. 16 MiB x 2 keeps writes batched, and all partitions share a
    # budget, so a worker's memtables do not grow with the partitions it owns.
    options.set_write_buffer_size(16 * 1024 * 1024)
    options.set_max_write_buffer_number(2)
    options.set_write_buffer_manager(_MEMTABLES)
    options.set_arena_block_size(MEMTABLE_BLOCK_BYTES)
    # No write-ahead log (see the module): a flush must take the data and the offset's
    # column family together, or a crash could leave an offset ahead of the data.
    options.set_atomic_flush(True)
    return options


def _unlogged() -> WriteOptions:
    options = WriteOptions()
    # An attribute (rocksdict's stub declares a method).
    options.disable_wal = True  # type: ignore[method-assign, assignment]
    return options


class PartitionDB:
    """One partition's RocksDB database and its applied changelog offset."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.db = Rdict(str(path), _options(), column_families={_META_CF: _options()})
        except Exception as exc:
            raise StateStoreError(
                f"cannot open the state database {path}: {exc} (is another store or an "
                "unfinished scan() still holding it?)"
            ) from exc
        self.db.set_write_options(_unlogged())
        self._meta = self.db.get_column_family(_META_CF)
        self._meta_handle = self.db.get_column_family_handle(_META_CF)
        raw = self._meta.get(_APPLIED_OFFSET)
        # The last changelog offset applied; None for a new database.
        self.offset: int | None = None if raw is None else int.from_bytes(raw, "big")

    def is_empty(self) -> bool:
        return next(iter(self.db.keys()), None) is None

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], offset: int | None) -> None:
        """Apply changes and record ``offset`` as applied, atomically.

        ``offset`` None applies the changes and leaves the applied offset where it is (a
        store with transactions: the offset moves only when nothing before it can still
        be missing, see :meth:`ChangelogStore.commit_held`); recovery from the older
        offset re-applies them, in log order, to the same result.
        """
        batch = WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if offset is not None:
            batch.put(_APPLIED_OFFSET, offset.to_bytes(8, "big"), self._meta_handle)
        self.db.write(batch)
        if offset is not None:
            self.offset = offset

    def close(self) -> None:
        # Every handle keeps RocksDB (and its LOCK file) alive: drop them all.
        self._meta.close()
        del self._meta_handle
        self.db.close()

    def destroy(self) -> None:
        self.close()
        Rdict.destroy(str(self.path), _options())


def open_partition(path: Path) -> PartitionDB:
    """Open (or create) the database at ``path``; one holding data without an applied
    changelog offset was not written by a store, and is rebuilt empty."""
    db = PartitionDB(path)
    if db.offset is None and not db.is_empty():
        logger.warning("%s has data but no changelog offset; rebuilding it", db.path)
        db.destroy()
        db = PartitionDB(db.path)
    return db
