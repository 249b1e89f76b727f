"""The one place where the Kafka client's errors become agentstream's (httpx's
``map_httpcore_exceptions``): every call into aiokafka that can fail on the broker's side
runs inside :func:`kafka_errors`, so no aiokafka exception leaks past the service layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import KafkaError

from agentstream.errors import BrokerError

__all__ = ["kafka_errors"]


@contextmanager
def kafka_errors(what: str, *, topic: str | None = None) -> Iterator[None]:
    """Translate what the Kafka client raises into :class:`BrokerError` (cause chained).

    Args:
        what: what was being done, for the message ("send an output", ...).
        topic: the topic involved, if one was.
    """
    try:
        yield
    except KafkaError as exc:
        where = f" to {topic!r}" if topic else ""
        raise BrokerError(f"could not {what}{where}: {exc!r}", topic=topic) from exc
    except TimeoutError as exc:  # the client's own deadlines (metadata, delivery)
        where = f" to {topic!r}" if topic else ""
        raise BrokerError(f"could not {what}{where}: timed out", topic=topic) from exc
