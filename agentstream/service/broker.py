"""Talking to a broker: per-broker client settings and topic administration.

Production runs on a real Kafka cluster. Development and the tests run on *Tansu*, the
embedded broker (:mod:`agentstream.service.embedded`), which differs from Kafka in a few
ways (see ``BROKER.md``); the workarounds live in one place,
:data:`EMBEDDED_BROKER_CLIENT_SETTINGS`, and are applied only when the embedded broker is in
use (:func:`client_settings`). Nothing else in agentstream may depend on a Tansu quirk.

- :func:`admin_client` opens an admin client (the one place one is set up).
- :func:`ensure_topics` creates topics with explicit partition counts, idempotently, and
  waits until their metadata is visible.
- :func:`wait_for_broker` waits until any Kafka broker answers.
- :func:`is_embedded_broker` tells whether a running broker is Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.service.settings import mask_url

__all__ = [
    "EMBEDDED_BROKER_CLIENT_SETTINGS",
    "KAFKA_CLIENT_SETTINGS",
    "TANSU_CLUSTER_ID",
    "ClientKind",
    "admin_client",
    "client_settings",
    "ensure_topics",
    "is_embedded_broker",
    "session_refused",
    "wait_for_broker",
]

logger = logging.getLogger(__name__)

TANSU_CLUSTER_ID = "tansu_cluster"
"""The cluster id Tansu reports unless started with ``--cluster-id``."""

ClientKind = Literal["consumer", "producer", "admin"]
"""The aiokafka client a set of settings is meant for (their constructors differ)."""

EMBEDDED_BROKER_CLIENT_SETTINGS: Mapping[ClientKind, Mapping[str, Any]] = MappingProxyType(
    {
        "consumer": MappingProxyType(
            {
                # Tansu holds JoinGroup for session_timeout/2 and a group keeps the session
                # timeout of its first member until the broker restarts: with Kafka's
                # defaults a first join takes ~35 s. 2 s gives ~2.5 s joins and ~3.5 s
                # failover. A first-generation member that stops cleanly is not removed
                # (aiokafka skips LeaveGroup at generation 0); a short session bounds that.
                "session_timeout_ms": 2000,
                "heartbeat_interval_ms": 500,
                # Ignored by Tansu; kept equal to the session timeout so that the client
                # does not wait longer than the broker will.
                "rebalance_timeout_ms": 2000,
                # Tansu answers a long-poll Fetch at max_wait/2 (then 3/4, 7/8 ...) instead
                # of when data arrives, one request at a time per connection: every hop
                # through a topic pays about half of this. Never 0: a 0 ms fetch returns
                # nothing on Tansu.
                "fetch_max_wait_ms": 20,
                # A JoinGroup sent while a SIGKILLed member's session is expiring is
                # sometimes never answered; Kafka's 40 s request timeout then stalls the
                # restart for over a minute. Retry after 5 s instead (> session timeout).
                "request_timeout_ms": 5000,
            }
        ),
        "producer": MappingProxyType(
            {
                # Tansu rejects InitProducerId (aiokafka sends v0): no idempotent or
                # transactional producer, at-least-once only.
                "enable_idempotence": False,
            }
        ),
        "admin": MappingProxyType({}),
    }
)
"""aiokafka settings that work around the embedded broker's quirks, per client kind.

Not listed because agentstream never relies on it: Tansu's ListOffsets(latest) returns the
base offset of the newest *batch* + 1, so ``end_offsets()``, ``seek_to_end()`` and
``auto_offset_reset="latest"`` undercount. Take a partition's end from the Fetch high
watermark (``consumer.highwater(tp)`` after a fetch) instead; it is correct everywhere.
"""


KAFKA_CLIENT_SETTINGS: Mapping[ClientKind, Mapping[str, Any]] = MappingProxyType(
    {
        "consumer": MappingProxyType({}),
        "producer": MappingProxyType(
            {
                # Kafka's own clients are idempotent by default (since 3.0), aiokafka's are
                # not: without it a retried batch can be written twice or out of order.
                "enable_idempotence": True,
            }
        ),
        "admin": MappingProxyType({}),
    }
)
"""aiokafka settings on a real Kafka, per client kind (otherwise aiokafka's defaults)."""


def client_settings(
    embedded: bool,
    overrides: Mapping[str, Any] | None = None,
    *,
    kind: ClientKind = "consumer",
) -> dict[str, Any]:
    """Return aiokafka keyword arguments for one client.

    Args:
        embedded: whether the client talks to the embedded (Tansu) broker; only then are
            :data:`EMBEDDED_BROKER_CLIENT_SETTINGS` applied, otherwise
            :data:`KAFKA_CLIENT_SETTINGS`.
        overrides: settings that win over the workarounds.
        kind: the client the settings are for.

    Returns:
        A new dict, safe to mutate.
    """
    defaults = EMBEDDED_BROKER_CLIENT_SETTINGS if embedded else KAFKA_CLIENT_SETTINGS
    settings: dict[str, Any] = dict(defaults[kind])
    settings.update(overrides or {})
    return settings


@contextlib.asynccontextmanager
async def admin_client(
    bootstrap: str,
    client_kwargs: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (its start is one metadata request), closed on exit.

    Args:
        bootstrap: ``host:port[,host:port...]``.
        client_kwargs: connection settings (security, SASL ...).
        timeout_s: bounds the start and each request (None: the client's defaults).
    """
    kwargs = dict(client_kwargs or {})
    if timeout_s is not None:
        kwargs.setdefault("request_timeout_ms", max(100, int(timeout_s * 1000)))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kwargs)
    try:
        if timeout_s is None:
            await admin.start()
        else:
            await asyncio.wait_for(admin.start(), timeout_s)
        yield admin
    finally:
        await admin.close()


async def _probe(bootstrap: str, timeout_s: float, client_kwargs: Mapping[str, Any]) -> None:
    """One metadata request (the admin client's bootstrap), bounded by ``timeout_s``."""
    async with admin_client(bootstrap, client_kwargs, timeout_s):
        pass


async def _wait_until_ready(
    bootstrap: str,
    timeout_s: float,
    client_kwargs: Mapping[str, Any],
    alive: Callable[[], bool] | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        if alive is not None and not alive():
            raise BrokerError(f"the broker at {bootstrap} exited before it became ready")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerError(
                f"no Kafka broker answered a metadata request at {bootstrap} within "
                f"{timeout_s:.1f} s (last error: {last_error!r}); is it running and reachable?"
            ) from last_error
        try:
            await _probe(bootstrap, min(remaining, 2.0), client_kwargs)
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            last_error = exc
        await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


async def wait_for_broker(
    bootstrap: str,
    timeout_s: float = 30.0,
    *,
    client_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Wait until a Kafka broker at ``bootstrap`` answers a metadata request.

    Args:
        bootstrap: ``host:port[,host:port...]``.
        timeout_s: how long to keep trying.
        client_kwargs: connection settings for the admin client (security, SASL ...).

    Raises:
        BrokerError: no broker answered in time; the last client error is the cause.
    """
    await _wait_until_ready(bootstrap, timeout_s, client_kwargs or {})


async def is_embedded_broker(
    bootstrap: str,
    client_kwargs: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = 10.0,
) -> bool:
    """Whether the broker at ``bootstrap`` is Tansu, i.e. needs the embedded workarounds.

    Recognised by Tansu's default cluster id (``tansu_cluster``), which
    :class:`EmbeddedBroker` keeps; a Tansu started with another ``--cluster-id`` is not
    recognised (configure the embedded mode explicitly then).

    Raises:
        BrokerError: the broker did not answer within ``timeout_s``.
    """
    try:
        async with admin_client(bootstrap, client_kwargs, timeout_s) as admin:
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(f"no Kafka broker answered at {bootstrap}: {exc!r}") from exc
    return str(cluster.get("cluster_id") or "").lower().startswith(TANSU_CLUSTER_ID)


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    client_kwargs: Mapping[str, Any] | None = None,
    topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create topics with the given partition counts, or check the existing ones.

    Idempotent: a topic that already exists with the requested partition count is fine.
    Returns once every topic's metadata shows all its partitions with a leader.

    Create every topic explicitly before any client touches it: the embedded broker
    auto-creates an unknown topic with 4 partitions on a metadata request.

    Args:
        bootstrap: ``host:port[,host:port...]``.
        topics: topic name -> partition count.
        replication_factor: for newly created topics.
        client_kwargs: connection settings for the admin client.
        topic_configs: topic name -> topic configs for newly created topics (e.g.
            ``{"cleanup.policy": "compact"}`` for changelogs); existing topics are not
            altered.
        timeout_s: how long to wait for the metadata.

    Raises:
        ConfigurationError: an existing topic has a different partition count, or the
            broker refused the request as invalid.
        BrokerError: the broker failed or the metadata did not appear in time.
    """
    if not topics:
        return
    for name, count in topics.items():
        if count < 1:
            raise ConfigurationError(f"topic {name!r}: partition count must be >= 1, not {count}")
    configs = topic_configs or {}
    try:
        async with admin_client(bootstrap, client_kwargs) as admin:
            response = await admin.create_topics(
                [
                    NewTopic(
                        name, count, replication_factor, topic_configs=dict(configs.get(name, {}))
                    )
                    for name, count in topics.items()
                ]
            )
            existed = set()
            for name, error_code, error_message in response.topic_errors:
                if error_code == 36:  # TOPIC_ALREADY_EXISTS
                    existed.add(name)
                elif error_code in (37, 38, 40, 42, 44):  # invalid partitions/replication/config
                    raise ConfigurationError(
                        f"the broker refused to create topic {name!r}: {error_message} "
                        f"(error code {error_code})"
                    )
                elif error_code != 0:
                    raise BrokerError(
                        f"creating topic {name!r} failed: {error_message} (error code {error_code})"
                    )
            await _wait_for_topic_metadata(admin, topics, existed, timeout_s)
    except KafkaError as exc:
        raise BrokerError(f"topic administration on {bootstrap} failed: {exc!r}") from exc


async def _wait_for_topic_metadata(
    admin: AIOKafkaAdminClient, topics: Mapping[str, int], existed: set[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    missing = dict(topics)
    while True:
        for desc in await admin.describe_topics(list(missing)):
            name = desc["topic"]
            partitions = desc["partitions"]
            if name not in missing or desc["error_code"] != 0:
                continue
            if name in existed and len(partitions) != missing[name]:
                raise ConfigurationError(
                    f"topic {name!r} already exists with {len(partitions)} partitions, but "
                    f"{missing[name]} are required; delete it or use the existing count"
                )
            if len(partitions) == missing[name] and all(p["leader"] >= 0 for p in partitions):
                del missing[name]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise BrokerError(
                f"the metadata of topics {sorted(missing)} did not appear within {timeout_s} s"
            )
        await asyncio.sleep(0.02)


def session_refused(embedded: bool, broker: str) -> str:
    """Why the broker refused the consumer group's session timeout, and what to do."""
    if embedded:
        return (
            f"the broker at {mask_url(broker)} refused the embedded development broker's 2 s "
            "consumer session (a real Kafka requires at least group.min.session.timeout.ms, "
            "6 s by default): it is not the embedded broker, so drop --embedded-broker "
            "(AGENTSTREAM_EMBEDDED_BROKER) or pass --real-broker"
        )
    return (
        f"the broker at {mask_url(broker)} refused the consumer session timeout "
        "(InvalidSessionTimeoutError): check its group.min.session.timeout.ms and "
        "group.max.session.timeout.ms"
    )


def __getattr__(name: str) -> Any:
    # The embedded broker moved to its own module; its old import path keeps working.
    if name in ("EmbeddedBroker", "free_port"):
        from agentstream.service import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
