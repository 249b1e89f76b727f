"""The one place where the Kafka client's errors become agentstream's (httpx's
``map_httpcore_exceptions``): every call into aiokafka that can fail on the broker's side
runs inside :func:`kafka_errors`, so no aiokafka exception leaks past the service layer."""

from __future__ import annotations

from types import TracebackType

from aiokafka.errors import KafkaError

from agentstream.errors import BrokerError

__all__ = ["kafka_errors"]


class kafka_errors:
    """Translate what the Kafka client raises into :class:`BrokerError` (cause chained).

    A class rather than a ``contextlib.contextmanager`` generator: every output and routed
    event goes through one, and a generator-based one cost about 3 µs each.

    Args:
        what: what was being done, for the message ("send an output", ...).
        topic: the topic involved, if one was.
    """

    __slots__ = ("topic", "what")

    def __init__(self, what: str, *, topic: str | None = None) -> None:
        self.what = what
        self.topic = topic

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if isinstance(exc, KafkaError):
            reason = f"{exc!r}"
        elif isinstance(exc, TimeoutError):  # the client's own deadlines (metadata, delivery)
            reason = "timed out"
        else:
            return
        where = f" to {self.topic!r}" if self.topic else ""
        raise BrokerError(f"could not {self.what}{where}: {reason}", topic=self.topic) from exc
