"""What a worker watches besides its records: whether the broker answers, and keys that
arrive on more than one input partition."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.client import AIOKafkaClient

from agentstream.observability.metrics import RuntimeMetrics

__all__ = ["BrokerWatch", "KeySpread"]

log = logging.getLogger("agentstream.service.worker")

_KEYS_REMEMBERED = 10_000  # keys whose partition is remembered, to warn of a second one


class BrokerWatch:
    """Asks the broker for metadata every second; /health reports whether it answers.

    Nothing is restarted when it does not: the clients reconnect on their own.
    """

    def __init__(self, client: AIOKafkaClient, metrics: RuntimeMetrics, grace_s: float):
        self._client = client
        self._metrics = metrics
        self._grace_s = grace_s
        self._ok_at = time.monotonic()  # when the broker last answered
        self._error: str | None = None

    async def run(self, interval_s: float = 1.0, timeout_s: float = 5.0) -> None:
        while True:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._client.fetch_all_metadata()
            except Exception as exc:
                if self._error is None:
                    log.warning("the broker does not answer: %r", exc)
                self._error = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
                self._metrics.broker_connected.set(0)
            else:
                if self._error is not None:
                    log.info("the broker answers again")
                self._error = None
                self._ok_at = time.monotonic()
                self._metrics.broker_connected.set(1)
            await asyncio.sleep(interval_s)

    def unreachable(self) -> str | None:
        """Why the broker counts as unreachable (past the grace period), or None."""
        if self._error is None:
            return None
        silent = time.monotonic() - self._ok_at
        if silent < self._grace_s:
            return None
        return f"no answer from the broker for {silent:.0f} s ({self._error})"


class KeySpread:
    """Counts (and warns once of) a key seen on a second input partition.

    Remembers the first partition of up to 10,000 keys (the oldest half is forgotten
    past that), so its memory is bounded whatever the key space: about 1 MiB (100,000
    keys were 8-10 MiB of a worker's peak). Producers with another partitioner misplace
    most keys, so the keys seen lately are enough to notice them.
    """

    def __init__(self, metrics: RuntimeMetrics):
        self._metrics = metrics
        self._first: dict[Any, int] = {}
        self._warned: set[Any] = set()

    def note(self, key: Any, partition: int) -> None:
        first = self._first.setdefault(key, partition)
        if first == partition:
            if len(self._first) > _KEYS_REMEMBERED:
                for old in list(self._first)[: _KEYS_REMEMBERED // 2]:
                    del self._first[old]
            return
        self._metrics.keys_on_several_partitions.inc()
        if key not in self._warned and len(self._warned) < _KEYS_REMEMBERED:
            self._warned.add(key)
            log.warning(
                "key %r arrives on input partitions %d and %d: each partition's records of "
                "it are processed as their own key (own order, own memory). Producers "
                "should partition by key with one partitioner (Kafka's default, murmur2)",
                key,
                first,
                partition,
            )
