"""A changelog store's flushing: produce the pending writes, apply them once acked.

:class:`Flushing` is a base of :class:`~agentstream.state.changelog.ChangelogStore` (see
its design note): group commit (concurrent callers share flushes), retriable produce
errors retried with backoff, any other error failing the store for good.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from agentstream.errors import AgentStreamError, BrokerError
from agentstream.state._held import HeldWrites
from agentstream.state._pending import PendingWrites, produce_pending

__all__ = ["Flushing"]

logger = logging.getLogger("agentstream.state.changelog")

_RETRY_BACKOFF_S = (0.05, 2.0)  # first and largest delay between flush attempts


class Flushing(HeldWrites):
    """Flushes of the pending writes; the store supplies its state."""

    _pending: PendingWrites
    _durable_version: int
    _flush_task: asyncio.Task[None] | None
    _flush_waiters: list[asyncio.Future[None]]  # of the flush task, set with it
    _producer: AIOKafkaProducer | None
    _dirty: asyncio.Event
    _flush_interval_s: float
    _failure: AgentStreamError | None

    async def flush(self) -> None:
        """Return when every write made before the call is acked and applied to RocksDB.

        Group commit: concurrent callers share flushes. A caller waits for the flush in
        progress and, if its writes came after that flush began, for the next one, which
        carries everything written meanwhile; so a thousand keys waiting for durability
        cost a few produce round trips, not a thousand.

        Retriable produce errors are retried (with backoff, for as long as it takes).

        Raises:
            BrokerError: a non-retriable produce error; the store is failed from then on.
            StateStoreError: RocksDB failed; the store is failed from then on.
        """
        target = self._pending.last_version
        while self._durable_version < target:
            self._raise_if_failed()
            if self._flush_task is None or self._flush_task.done():
                self._flush_waiters = []
                self._flush_task = asyncio.create_task(self._flush_round())
                self._flush_task.add_done_callback(functools.partial(_wake, self._flush_waiters))
            # A future of its own per caller (cancelling one cancels no other, nor the
            # flush), woken by the round's one callback: asyncio.shield per caller made
            # two more callbacks and a future each.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._flush_waiters.append(waiter)
            await waiter

    async def _flush_round(self) -> None:
        """One flush of everything pending, retrying transient errors."""
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        """One flush of everything pending (the flush lock held), retrying transient errors."""
        covered = self._pending.last_version
        delay = _RETRY_BACKOFF_S[0]
        while True:
            self._raise_if_failed()
            try:
                assert self._producer is not None
                await produce_pending(
                    self._pending, self._producer, self._topic, self._dbs, self._acked
                )
                self._durable_version = max(self._durable_version, covered)
                if self._acked is not None:
                    for partition in list(self._acked):
                        self._advance(partition, flushing=True)
                return
            except AgentStreamError as exc:
                self._fail(exc)
                raise
            except Exception as exc:
                if not _is_retriable(exc):
                    raise self._fail(exc) from exc
                logger.warning(
                    "changelog %s: produce failed (%r); retrying in %.2f s",
                    self._topic,
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_BACKOFF_S[1])

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._flush_interval_s)  # coalescing window
            self._dirty.clear()
            try:
                await self.flush()
            except AgentStreamError:
                return  # logged by _fail; flush() and writes raise it from now on

    def _fail(self, exc: BaseException) -> AgentStreamError:
        if isinstance(exc, AgentStreamError):
            failure = exc
        else:
            failure = BrokerError(
                f"producing to changelog {self._topic!r} failed: {exc!r}; the store refuses "
                "further writes and its unflushed writes are not persisted: restart the worker"
            )
        self._failure = failure
        logger.error("changelog %s: store failed: %s", self._topic, failure, exc_info=exc)
        return failure

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise type(self._failure)(
                f"the store changelogged to {self._topic!r} failed earlier: {self._failure}"
            ) from self._failure


def _wake(waiters: list[asyncio.Future[None]], task: asyncio.Task[None]) -> None:
    """Hand the end of a flush round to its waiters (its error retrieved here)."""
    error = None if task.cancelled() else task.exception()
    for waiter in waiters:
        if waiter.done():  # its caller was cancelled
            continue
        if task.cancelled():
            waiter.cancel()
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)


def _is_retriable(exc: BaseException) -> bool:
    # KafkaTimeoutError: a batch expired while the broker was unreachable; try again.
    return isinstance(exc, KafkaTimeoutError) or (
        isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))
    )
