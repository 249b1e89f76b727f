"""The ``agentstream`` command line (also ``python -m agentstream``)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from agentstream.errors import AgentStreamError
from agentstream.service.app import AgentApp

__all__ = ["main"]

log = logging.getLogger("agentstream")


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


def _overrides(**flags: Any) -> dict[str, Any]:
    return {name: value for name, value in flags.items() if value is not None}


async def _detect_embedded(app: AgentApp) -> bool:
    from agentstream.service.broker import is_embedded_broker

    try:
        return await is_embedded_broker(
            ",".join(app.settings.bootstrap_servers), app.settings.client_kwargs()
        )
    except Exception:  # unreachable broker: the worker reports it properly
        return False


async def _run_worker(app: AgentApp) -> None:
    from agentstream.service.web import WebServer
    from agentstream.service.worker import Worker

    worker = Worker(app)
    web = None
    if app.settings.web_port:
        web = WebServer(worker, app.settings.web_host, app.settings.web_port)
        await web.start()
    try:
        await worker.run()
    finally:
        if web is not None:
            await web.stop()


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


broker_option = click.option(
    "--broker",
    envvar="AGENTSTREAM_BROKER",
    default=None,
    help="Broker URL(s), e.g. kafka://127.0.0.1:9092 [env AGENTSTREAM_BROKER].",
)


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def main(log_level: str) -> None:
    """agentstream: event-driven AI agents on Kafka."""
    _setup_logging(log_level)


@main.command()
@click.option("--port", default=9092, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
def broker(port: int, host: str) -> None:
    """Run the embedded development broker in the foreground (in memory; not for production)."""
    from agentstream.service.broker import EmbeddedBroker

    with EmbeddedBroker(port=port, host=host) as running:
        click.echo(f"embedded broker on {running.url} (development and tests only; Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            while running.running:
                time.sleep(0.5)


def _worker_options(fn: Any) -> Any:
    options = [
        broker_option,
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            default=None,
            help="State directory [env AGENTSTREAM_DATA_DIR].",
        ),
        click.option("--web-host", default=None, help="Host of /metrics and /health."),
        click.option(
            "--web-port",
            type=int,
            default=None,
            help="Port of /metrics and /health (0: off) [env AGENTSTREAM_WEB_PORT].",
        ),
        click.option("--partitions", type=int, default=None, help="Partitions of created topics."),
        click.option("--fetch-wait-ms", type=int, default=None, help="Consumer fetch wait."),
        click.option(
            "--max-concurrency", type=int, default=None, help="Keys in flight per worker."
        ),
        click.option("--error-policy", type=click.Choice(["dead_letter", "fail"]), default=None),
        click.option(
            "--processing-guarantee",
            type=click.Choice(["at_least_once", "exactly_once"]),
            default=None,
        ),
        click.option("--input-codec", type=click.Choice(["json", "msgpack", "raw"]), default=None),
        click.option("--output-codec", type=click.Choice(["json", "msgpack", "raw"]), default=None),
        click.option(
            "--embedded-broker/--real-broker",
            default=None,
            help="Apply the embedded broker's workarounds (default: detect).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@click.argument("app_spec", metavar="APP")
@_worker_options
def worker(app_spec: str, **flags: Any) -> None:
    """Run a worker of APP (module:attribute); run several for a consumer group."""
    app = load_app(app_spec)
    app.configure(**_overrides(**flags))
    if flags.get("embedded_broker") is None and asyncio.run(_detect_embedded(app)):
        log.info("embedded development broker detected: applying its workarounds")
        app.configure(**_overrides(**flags), embedded_broker=True)
    try:
        asyncio.run(_run_worker(app))
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.argument("app_spec", metavar="APP")
@click.option("--port", default=9092, show_default=True, type=int, help="Broker port.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--web-port", type=int, default=None)
def dev(app_spec: str, port: int, data_dir: Path | None, web_port: int | None) -> None:
    """Embedded broker and one worker of APP, in one command."""
    from agentstream.service.broker import EmbeddedBroker

    app = load_app(app_spec)
    with EmbeddedBroker(port=port) as running:
        app.configure(
            **_overrides(broker=running.url, data_dir=data_dir, web_port=web_port),
            embedded_broker=True,
        )
        click.echo(f"embedded broker on {running.url}; worker of {app.name} starting")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run_worker(app))


@main.command()
@click.argument("app_spec", metavar="APP")
@click.argument("value")
@click.option("--key", default=None, help="Record key.")
@click.option("--timestamp", type=int, default=None, help="Source timestamp (ms).")
@broker_option
def send(
    app_spec: str, value: str, key: str | None, timestamp: int | None, broker: str | None
) -> None:
    """Send VALUE (JSON text with the JSON codec) to APP's input topic."""
    from agentstream.service.client import send_records

    app = load_app(app_spec)
    app.configure(**_overrides(broker=broker))
    if not app.settings.embedded_broker and asyncio.run(_detect_embedded(app)):
        # Tansu refuses idempotent producers.
        app.configure(**_overrides(broker=broker), embedded_broker=True)
    if app.settings.input_codec == "json":
        try:
            json.loads(value)
        except ValueError as exc:
            raise click.BadParameter(
                f"VALUE is not JSON ({exc}); quote strings: '\"ann\"'"
            ) from exc
    asyncio.run(send_records(app, [(key, value.encode(), timestamp)]))


@main.command()
@click.argument("app_spec", metavar="APP")
@click.option("--from-beginning/--new-only", default=True, show_default=True)
@click.option("--max", "max_records", type=int, default=None, help="Stop after N records.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@click.option("--topic", default=None, help="Another topic of the app (e.g. the dead letters).")
@broker_option
def tail(
    app_spec: str,
    from_beginning: bool,
    max_records: int | None,
    timeout: float | None,
    topic: str | None,
    broker: str | None,
) -> None:
    """Follow APP's output topic: one JSON line per record."""
    from agentstream.service.client import follow

    app = load_app(app_spec)
    app.configure(**_overrides(broker=broker))

    def show(record: dict[str, Any]) -> None:
        click.echo(json.dumps(record, ensure_ascii=False))

    asyncio.run(
        follow(
            app,
            show,
            topic=topic,
            from_beginning=from_beginning,
            max_records=max_records,
            idle_timeout_s=timeout,
        )
    )


@main.command()
@click.argument("app_spec", metavar="APP", default="examples.greeter:app")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def demo(app_spec: str, data_dir: Path | None) -> None:
    """Embedded broker + worker + sample records; prints the outputs (what `make run` does)."""
    from agentstream.service.client import run_demo

    app = load_app(app_spec)
    logging.getLogger().setLevel(logging.WARNING)  # the demo shows records, not logs
    try:
        asyncio.run(run_demo(app, data_dir))
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":  # pragma: no cover
    main()
