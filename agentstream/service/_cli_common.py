"""What the CLI's commands share: loading an app, running a command's coroutine with
one-line errors, the broker probe, the shared options.

:mod:`agentstream.service.cli` defines the command group; the Kafka clients (``send``,
``tail``) are in :mod:`agentstream.service.cli_topics`, the inspection commands in
:mod:`agentstream.service.cli_inspect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import re
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from agentstream.errors import AgentStreamError, BrokerError
from agentstream.service.app import AgentApp

__all__ = [
    "APP_SPEC",
    "LEVELS",
    "broker_option",
    "client_app",
    "detect_embedded",
    "load_app",
    "log_level_option",
    "no_broker",
    "overrides",
    "probe",
    "run",
    "set_log_level",
]

T = TypeVar("T")
LEVELS = ["debug", "info", "warning", "error"]
APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
"""``module:attribute``, as APP is written."""


def load_app(spec: str) -> AgentApp:
    """Import ``module:attribute`` (the current directory is importable)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: expected module:attribute, e.g. examples.greeter:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, AgentApp):
        raise click.BadParameter(f"{spec!r} is not an AgentApp (got {type(app).__name__})")
    return app


def overrides(**flags: Any) -> dict[str, Any]:
    return {name: value for name, value in flags.items() if value is not None}


def run(coro: Coroutine[Any, Any, T], bootstrap: str | None = None) -> T:
    """Run a command's coroutine; what the user can fix is one line, not a traceback."""
    try:
        return asyncio.run(coro)
    except BrokerError as exc:
        raise click.ClickException(_broker_line(exc, bootstrap)) from exc
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc


def no_broker(bootstrap: str) -> str:
    return f"no broker at {bootstrap} (start one with `agentstream broker`)"


def _broker_line(exc: BrokerError, bootstrap: str | None) -> str:
    from aiokafka.errors import KafkaConnectionError

    from agentstream.service.client import NoBroker

    if isinstance(exc, NoBroker):
        return str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KafkaConnectionError) or "Unable to bootstrap" in str(cause):
            return no_broker(bootstrap or "the configured address")
        cause = cause.__cause__
    return str(exc)


async def probe(app: AgentApp) -> bool | None:
    """Whether APP's broker is the embedded one; None if no broker answers (aiokafka's
    connection errors are kept quiet meanwhile: the caller says it in one line)."""
    from agentstream.service.broker import is_embedded_broker

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return await is_embedded_broker(
            ",".join(app.settings.bootstrap_servers), app.settings.client_kwargs(), timeout_s=5
        )
    except BrokerError:
        return None
    finally:
        quiet.setLevel(level)


async def detect_embedded(app: AgentApp) -> bool:
    return bool(await probe(app))


def set_log_level(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _log_level_after(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        set_log_level(value)


log_level_option = click.option(
    "--log-level",
    type=click.Choice(LEVELS),
    default=None,
    expose_value=False,
    callback=_log_level_after,
    help="Log level (also accepted before the command).",
)

broker_option = click.option(
    "--broker",
    envvar="AGENTSTREAM_BROKER",
    default=None,
    help="Broker URL(s), e.g. kafka://127.0.0.1:9092 [env AGENTSTREAM_BROKER].",
)


def client_app(broker: str | None, app_spec: str | None) -> tuple[AgentApp | None, Any]:
    """The app (if named) and the connection to the broker: the app's settings, or the
    broker and security settings alone (no import of the app needed)."""
    from agentstream.service.client import Connection
    from agentstream.service.settings import Settings

    # A missing broker is one line of ours, not aiokafka's connection errors before it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    if app_spec is not None:
        app = load_app(app_spec)
        app.configure(**overrides(broker=broker))
        if not app.settings.embedded_broker and asyncio.run(detect_embedded(app)):
            app.configure(**overrides(broker=broker), embedded_broker=True)  # Tansu quirks
        return app, Connection.of(app)
    settings = Settings.load(overrides(broker=broker))
    bootstrap = ",".join(settings.bootstrap_servers)
    embedded = settings.embedded_broker
    if not embedded:
        from agentstream.service.broker import is_embedded_broker

        with contextlib.suppress(Exception):
            embedded = asyncio.run(is_embedded_broker(bootstrap, settings.client_kwargs()))
    return None, Connection(bootstrap, settings.client_kwargs(), embedded)
