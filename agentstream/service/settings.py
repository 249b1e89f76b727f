"""Service settings: one frozen object; each field's type, default, env var and doc in one place.

Precedence: CLI flags > ``AgentApp(...)`` keyword arguments > environment > defaults.
Only this module reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from agentstream.errors import ConfigurationError

__all__ = ["ENV_PREFIX", "Settings"]

ENV_PREFIX = "AGENTSTREAM_"


def _setting(default: Any, doc: str, env: str | None = None, secret: bool = False) -> Any:
    return field(default=default, metadata={"doc": doc, "env": env, "secret": secret})


MASK = "***"


def mask_url(url: str) -> str:
    """``url`` with any password in its user info masked (``kafka://u:***@host``)."""
    return re.sub(r"(//[^/@:,]*):[^/@,]*@", rf"\1:{MASK}@", url)


@dataclass(frozen=True, repr=False)
class Settings:
    """Settings of one agentstream app (environment variable: ``AGENTSTREAM_<NAME>``).

    Secrets (``sasl_password``, passwords in broker URLs) are masked in ``repr`` and
    ``str``, so a settings object can be logged.
    """

    broker: str = _setting("kafka://127.0.0.1:9092", "Broker URL(s), comma separated.")
    partitions: int = _setting(4, "Partitions of the input, internal and changelog topics.")
    data_dir: Path = _setting(Path("./data"), "Where RocksDB keeps state, one DB per partition.")
    web_host: str = _setting("127.0.0.1", "Host of the /metrics and /health endpoints.")
    web_port: int = _setting(6066, "Port of /metrics and /health; 0 disables the web server.")
    input_codec: Literal["json", "msgpack", "raw"] = _setting("json", "Codec of input values.")
    output_codec: Literal["json", "msgpack", "raw"] = _setting("json", "Codec of output values.")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = _setting(
        "at_least_once", "Delivery guarantee; exactly_once needs Kafka transactions."
    )
    error_policy: Literal["dead_letter", "fail"] = _setting(
        "dead_letter", "What a failing action or bad record does: dead-letter it, or stop."
    )
    dead_letter_topic: str | None = _setting(
        None, "Dead-letter topic (default: '<app>-dead-letters')."
    )
    max_concurrency: int | None = _setting(
        1000, "Keys processed at once per worker (None: no cap); more wait their turn."
    )
    max_buffered_inputs: int = _setting(
        10_000,
        "Inputs accepted but not finished per worker before fetching pauses (each input "
        "partition keeps a share of them while it has records to read).",
    )
    fetch_wait_ms: int = _setting(
        50, "Consumer fetch wait: every hop through a topic may wait this long (never 0)."
    )
    commit_interval_s: float = _setting(0.5, "How often offsets are committed.")
    thread_pool_size: int = _setting(64, "Threads for blocking durable_execute_async calls.")
    replication_factor: int = _setting(1, "Replication factor of the topics agentstream creates.")
    embedded_broker: bool = _setting(
        False, "The broker is the embedded development broker (applies its workarounds)."
    )
    security_protocol: str = _setting("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    sasl_mechanism: str | None = _setting(None, "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512...")
    sasl_username: str | None = _setting(None, "SASL user name.")
    sasl_password: str | None = _setting(None, "SASL password.", secret=True)
    ssl_cafile: str | None = _setting(None, "CA bundle for TLS.")
    ssl_certfile: str | None = _setting(None, "Client certificate for TLS.")
    ssl_keyfile: str | None = _setting(None, "Client key for TLS.")
    action_timeout_s: float | None = _setting(
        None,
        "Default timeout of an action once it first waits, in seconds (None: none); "
        "@action(timeout=...) overrides it per action.",
    )
    max_events_per_input: int = _setting(
        1000,
        "Events an input's actions may send in all before the input fails (stops loops).",
    )
    broker_unreachable_grace_s: float = _setting(
        10.0, "How long the broker may be unreachable before /health answers 503."
    )
    event_log: str | None = _setting(
        None,
        "Path of the event log (JSON lines, flushed every second); None: off unless the "
        "app configures one.",
    )

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.metadata.get("secret"):
                shown = repr(MASK)
            elif f.name == "broker":
                shown = repr(mask_url(value))
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> Settings:
        """Defaults, then ``AGENTSTREAM_*`` environment variables, then ``overrides``."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata.get("env") or ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = raw
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigurationError(f"unknown settings {unknown}; known: {sorted(known)}")
        converted = {name: _convert(known[name], value) for name, value in values.items()}
        settings = cls(**converted)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> Settings:
        return self.from_mapping({**dataclasses.asdict(self), **changes})

    def validate(self) -> None:
        if self.partitions < 1:
            raise ConfigurationError(f"partitions must be >= 1, got {self.partitions}")
        if self.fetch_wait_ms <= 0:
            raise ConfigurationError(
                "fetch_wait_ms must be > 0: a 0 ms fetch returns nothing on some brokers"
            )
        for name in ("input_codec", "output_codec"):
            if getattr(self, name) not in ("json", "msgpack", "raw"):
                raise ConfigurationError(f"{name} must be json, msgpack or raw")
        if self.processing_guarantee not in ("at_least_once", "exactly_once"):
            raise ConfigurationError("processing_guarantee must be at_least_once or exactly_once")
        if self.error_policy not in ("dead_letter", "fail"):
            raise ConfigurationError("error_policy must be dead_letter or fail")
        if self.action_timeout_s is not None and self.action_timeout_s <= 0:
            raise ConfigurationError("action_timeout_s must be > 0 (or None: no timeout)")
        if self.max_events_per_input < 1:
            raise ConfigurationError("max_events_per_input must be >= 1")

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker URLs without the ``kafka://`` scheme."""
        return [u.strip().removeprefix("kafka://") for u in self.broker.split(",") if u.strip()]

    def client_kwargs(self) -> dict[str, Any]:
        """Security settings passed through to every Kafka client."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        return kwargs


def _convert(f: dataclasses.Field[Any], value: Any) -> Any:
    if not isinstance(value, str):
        return Path(value) if f.name == "data_dir" else value
    kind = str(f.type)
    try:
        if f.name == "data_dir":
            return Path(value)
        if kind.startswith("int"):
            return None if value.lower() in ("", "none") else int(value)
        if kind.startswith("float"):
            return None if value.lower() in ("", "none") else float(value)
        if kind.startswith("bool"):
            return value.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ConfigurationError(f"setting {f.name}: cannot parse {value!r}: {exc}") from exc
    return value
