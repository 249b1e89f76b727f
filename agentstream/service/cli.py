"""The ``agentstream`` command line (also ``python -m agentstream``).

Habits of Kafka's own tools are kept: ``send`` reads records from stdin like
kafka-console-producer and kcat (``key<TAB>value``, ``-H name=value``) and prints
``partition@offset``; ``tail`` reads like kafka-console-consumer (``--from-beginning``,
``--offset``, ``--partition``): :mod:`agentstream.service.cli_topics`. Failures a user
causes (no broker, a port in use, an unknown topic) are one line, not a traceback. The
inspection commands (``inspect``, ``dead-letters``, ``events``) live in
:mod:`agentstream.service.cli_inspect`; what commands share in
:mod:`agentstream.service._cli_common`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from agentstream import __version__
from agentstream.errors import AgentStreamError
from agentstream.service import cli_inspect, cli_rescale, cli_topics
from agentstream.service._cli_common import (
    LEVELS,
    broker_option,
    load_app,
    log_level_option,
    no_broker,
    overrides,
    probe,
    run,
    set_log_level,
)
from agentstream.service._gc import tune_gc
from agentstream.service._malloc import tune_malloc
from agentstream.service.app import AgentApp

__all__ = ["main"]

log = logging.getLogger("agentstream")


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _port_in_use(port: int, who: str, flag: str) -> click.ClickException:
    return click.ClickException(f"port {port} is in use (another {who}?): pass another {flag}")


async def _run_worker(app: AgentApp) -> None:
    from agentstream.service.web import WebServer
    from agentstream.service.worker import Worker

    tune_malloc()  # before the worker opens a database or a connection
    worker = Worker(app)
    web = None
    if app.settings.web_port:
        web = WebServer(worker, app.settings.web_host, app.settings.web_port)
        try:
            await web.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_in_use(app.settings.web_port, "worker", "--web-port") from None
            raise
    tune_gc()  # the app, the worker and their imports are all there by now
    try:
        await worker.run()
    finally:
        if web is not None:
            await web.stop()


class _Group(click.Group):
    """Every subcommand also takes ``--log-level`` (where Kafka tools take their flags)."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "log_level" for p in cmd.params):
            log_level_option(cmd)
        super().add_command(cmd, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="agentstream")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LEVELS),
)
def main(log_level: str) -> None:
    """agentstream: event-driven AI agents on Kafka."""
    set_log_level(log_level)


@main.command()
@click.option("--port", default=9092, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
def broker(port: int, host: str) -> None:
    """Run the embedded development broker in the foreground (in memory; not for production)."""
    from agentstream.service.broker import EmbeddedBroker

    if not _port_is_free(host, port):
        raise _port_in_use(port, "broker", "--port")
    # SIGTERM stops it as Ctrl-C does: the broker process it runs is stopped with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
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
        click.option("--web-host", default=None, help="Host of /metrics, /health and /keys."),
        click.option(
            "--web-port",
            type=int,
            default=None,
            help="Port of /metrics, /health and /keys (0: off) [env AGENTSTREAM_WEB_PORT].",
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
            "--event-log",
            default=None,
            metavar="PATH",
            help="Write the event log (JSON lines) to PATH [env AGENTSTREAM_EVENT_LOG].",
        ),
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
    try:
        app.configure(**overrides(**flags))
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    bootstrap = ",".join(app.settings.bootstrap_servers)
    embedded = asyncio.run(probe(app))
    if embedded is None:
        raise click.ClickException(no_broker(bootstrap))
    if flags.get("embedded_broker") is None and embedded:
        log.info("embedded development broker detected: applying its workarounds")
        app.configure(**overrides(**flags), embedded_broker=True)
    run(_run_worker(app), bootstrap)


@main.command()
@click.argument("app_spec", metavar="APP")
@click.option("--port", default=9092, show_default=True, type=int, help="Broker port.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--web-port", type=int, default=None)
@click.option("--event-log", default=None, metavar="PATH", help="Write the event log to PATH.")
def dev(
    app_spec: str, port: int, data_dir: Path | None, web_port: int | None, event_log: str | None
) -> None:
    """Embedded broker and one worker of APP, in one command."""
    from agentstream.service.broker import EmbeddedBroker

    app = load_app(app_spec)
    if not _port_is_free("127.0.0.1", port):
        raise _port_in_use(port, "broker", "--port")
    with EmbeddedBroker(port=port) as running:
        app.configure(
            **overrides(
                broker=running.url, data_dir=data_dir, web_port=web_port, event_log=event_log
            ),
            embedded_broker=True,
        )
        click.echo(f"embedded broker on {running.url}; worker of {app.name} starting")
        with contextlib.suppress(KeyboardInterrupt):
            run(_run_worker(app))


@main.command()
@click.argument("app_spec", metavar="APP", default="examples.greeter:app")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def demo(app_spec: str, data_dir: Path | None) -> None:
    """Embedded broker + worker of APP; sends APP's samples (AgentApp(samples=[...])) and
    prints the outputs (what `make run` does with the greeter)."""
    from agentstream.service.client import run_demo

    app = load_app(app_spec)
    logging.getLogger().setLevel(logging.WARNING)  # the demo shows records, not logs
    run(run_demo(app, data_dir))


main.add_command(cli_topics.send)
main.add_command(cli_topics.tail)
main.add_command(cli_rescale.rescale)
cli_inspect.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
