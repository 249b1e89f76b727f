"""The ``agentstream`` command line (also ``python -m agentstream``).

Habits of Kafka's own tools are kept: ``send`` reads records from stdin like
kafka-console-producer and kcat (``key<TAB>value``, ``-H name=value``) and prints
``partition@offset``; ``tail`` reads like kafka-console-consumer (``--from-beginning``,
``--offset``, ``--partition``). Failures a user causes (no broker, a port in use, an
unknown topic) are one line, not a traceback. The inspection commands (``inspect``,
``dead-letters``, ``events``) live in :mod:`agentstream.service.cli_inspect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from agentstream import __version__
from agentstream.errors import AgentStreamError, BrokerError
from agentstream.service.app import AgentApp

__all__ = ["main"]

log = logging.getLogger("agentstream")
T = TypeVar("T")
_LEVELS = ["debug", "info", "warning", "error"]
_APP_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


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


def run(coro: Coroutine[Any, Any, T], bootstrap: str | None = None) -> T:
    """Run a command's coroutine; what the user can fix is one line, not a traceback."""
    try:
        return asyncio.run(coro)
    except BrokerError as exc:
        raise click.ClickException(_broker_line(exc, bootstrap)) from exc
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc


def _no_broker(bootstrap: str) -> str:
    return f"no broker at {bootstrap} (start one with `agentstream broker`)"


def _broker_line(exc: BrokerError, bootstrap: str | None) -> str:
    from aiokafka.errors import KafkaConnectionError

    from agentstream.service.client import NoBroker

    if isinstance(exc, NoBroker):
        return str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, KafkaConnectionError) or "Unable to bootstrap" in str(cause):
            return _no_broker(bootstrap or "the configured address")
        cause = cause.__cause__
    return str(exc)


async def _probe(app: AgentApp) -> bool | None:
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


async def _detect_embedded(app: AgentApp) -> bool:
    return bool(await _probe(app))


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
    try:
        await worker.run()
    finally:
        if web is not None:
            await web.stop()


def _set_log_level(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _log_level_after(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _set_log_level(value)


log_level_option = click.option(
    "--log-level",
    type=click.Choice(_LEVELS),
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
    type=click.Choice(_LEVELS),
)
def main(log_level: str) -> None:
    """agentstream: event-driven AI agents on Kafka."""
    _set_log_level(log_level)


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
        app.configure(**_overrides(**flags))
    except AgentStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    bootstrap = ",".join(app.settings.bootstrap_servers)
    embedded = asyncio.run(_probe(app))
    if embedded is None:
        raise click.ClickException(_no_broker(bootstrap))
    if flags.get("embedded_broker") is None and embedded:
        log.info("embedded development broker detected: applying its workarounds")
        app.configure(**_overrides(**flags), embedded_broker=True)
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
            **_overrides(
                broker=running.url, data_dir=data_dir, web_port=web_port, event_log=event_log
            ),
            embedded_broker=True,
        )
        click.echo(f"embedded broker on {running.url}; worker of {app.name} starting")
        with contextlib.suppress(KeyboardInterrupt):
            run(_run_worker(app))


def _client_app(broker: str | None, app_spec: str | None) -> tuple[AgentApp | None, Any]:
    """The app (if named) and the connection to the broker: the app's settings, or the
    broker and security settings alone (no import of the app needed)."""
    from agentstream.service.client import Connection
    from agentstream.service.settings import Settings

    # A missing broker is one line of ours, not aiokafka's connection errors before it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    if app_spec is not None:
        app = load_app(app_spec)
        app.configure(**_overrides(broker=broker))
        if not app.settings.embedded_broker and asyncio.run(_detect_embedded(app)):
            app.configure(**_overrides(broker=broker), embedded_broker=True)  # Tansu quirks
        return app, Connection.of(app)
    settings = Settings.load(_overrides(broker=broker))
    bootstrap = ",".join(settings.bootstrap_servers)
    embedded = settings.embedded_broker
    if not embedded:
        from agentstream.service.broker import is_embedded_broker

        with contextlib.suppress(Exception):
            embedded = asyncio.run(is_embedded_broker(bootstrap, settings.client_kwargs()))
    return None, Connection(bootstrap, settings.client_kwargs(), embedded)


def _headers(pairs: tuple[str, ...]) -> list[tuple[str, bytes]]:
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: give headers as name=value", param_hint="-H")
        headers.append((name, value.encode()))
    return headers


def _lines(
    value: str | None, key: str | None, separator: str
) -> Iterator[tuple[int, str | None, str]]:
    """(line number, key, value) of VALUE, or of each non-empty line of stdin."""
    if value is not None:
        yield 0, key, value
        return
    for number, line in enumerate(sys.stdin, 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        if separator and separator in line:
            line_key, _, line_value = line.partition(separator)
            yield number, line_key, line_value
        else:
            yield number, key, line


@main.command()
@click.argument("args", nargs=-1, metavar="[APP] [VALUE]")
@click.option("--topic", default=None, help="Send to this topic (APP not needed).")
@click.option("--key", default=None, help="Record key (of VALUE, and of lines without one).")
@click.option(
    "--key-separator",
    default="\t",
    show_default="TAB",
    help="Splits a stdin line into key and value ('' : lines are values only).",
)
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="NAME=VALUE", help="A header (repeat)."
)
@click.option("--partition", type=int, default=None, help="Partition (default: by key).")
@click.option("--timestamp", type=int, default=None, help="Source timestamp (ms).")
@broker_option
def send(
    args: tuple[str, ...],
    topic: str | None,
    key: str | None,
    key_separator: str,
    headers: tuple[str, ...],
    partition: int | None,
    timestamp: int | None,
    broker: str | None,
) -> None:
    """Send records to APP's input topic, or to --topic.

    One record: VALUE (JSON text with the JSON codec: '"ann"'). Without VALUE, records are
    read from stdin, one per line, as key<TAB>value (or value alone). Each record sent is
    printed as topic partition@offset. With --topic, APP is not needed (nor its imports):
    values are sent as they are written.
    """
    from agentstream.service.client import OutRecord, produce, require_topic, send_records

    app_spec, value = _send_args(args, topic)
    app, conn = _client_app(broker, app_spec)
    target = topic or (app.input_topic if app is not None else None)
    assert target is not None
    check_json = app is not None and app.settings.input_codec == "json" and topic is None
    records = []
    header_list = _headers(headers)
    for number, record_key, text in _lines(value, key, key_separator):
        if check_json:
            try:
                json.loads(text)
            except ValueError as exc:
                where = "VALUE" if number == 0 else f"line {number}"
                raise click.BadParameter(
                    f"{where} is not JSON ({exc}); quote strings: '\"ann\"'"
                ) from exc
        records.append(OutRecord(record_key, text.encode(), header_list, timestamp, partition))

    def sent(record: OutRecord, at_partition: int, offset: int) -> None:
        shown = "" if record.key is None else f" key={record.key}"
        click.echo(f"{target} {at_partition}@{offset}{shown}")

    async def go() -> None:
        if app is not None and topic is None:
            await send_records(app, [])  # creates the app's topics where missing
        else:
            await require_topic(conn, target)
        await produce(conn, target, records, sent)

    run(go())


def _send_args(args: tuple[str, ...], topic: str | None) -> tuple[str | None, str | None]:
    """(APP, VALUE) from the positional arguments."""
    if len(args) > 2:
        raise click.UsageError("give at most APP and VALUE (more records: one per stdin line)")
    if topic is None:
        if not args:
            raise click.UsageError("give APP (module:attribute), or --topic")
        return args[0], args[1] if len(args) == 2 else None
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1:
        return (args[0], None) if _APP_SPEC.match(args[0]) else (None, args[0])
    return None, None


@main.command()
@click.argument("app_spec", metavar="[APP]", required=False)
@click.option("--topic", default=None, help="Another topic (APP not needed then).")
@click.option(
    "--from-beginning/--new-only",
    default=True,
    show_default=True,
    help="Start at the beginning, or show only records arriving from now on.",
)
@click.option(
    "--offset",
    type=int,
    default=None,
    help="Start at this offset of each partition (negative: that many before the end).",
)
@click.option("--since", default=None, metavar="TIME", help="Start at TIME: 10m, 2h, 1d, ISO.")
@click.option("--partition", "partitions", type=int, multiple=True, help="Only this partition.")
@click.option("--key", default=None, help="Only records with this key.")
@click.option(
    "--format",
    "form",
    type=click.Choice(["value", "json", "full"]),
    default="json",
    show_default=True,
    help="value: the value alone; json: key and value; full: with topic, partition, "
    "offset, timestamp, headers.",
)
@click.option("--max", "max_records", type=int, default=None, help="Stop after N records.")
@click.option("--timeout", type=float, default=None, help="Stop after this many idle seconds.")
@broker_option
def tail(
    app_spec: str | None,
    topic: str | None,
    from_beginning: bool,
    offset: int | None,
    since: str | None,
    partitions: tuple[int, ...],
    key: str | None,
    form: str,
    max_records: int | None,
    timeout: float | None,
    broker: str | None,
) -> None:
    """Follow APP's output topic (or --topic): one line per record."""
    from agentstream.service.client import parse_since, read_records
    from agentstream.service.codecs import codec_for

    if app_spec is None and topic is None:
        raise click.UsageError("give APP (module:attribute), or --topic")
    app, conn = _client_app(broker, app_spec)
    target = topic or (app.output_topic if app is not None else "")
    codec = None
    if app is not None:
        codecs = {
            app.output_topic: app.settings.output_codec,
            app.input_topic: app.settings.input_codec,
            app.dead_letter_topic: app.settings.input_codec,  # dead letters carry inputs
        }
        codec = codec_for(codecs[target]) if target in codecs else None
    since_ms = None
    if since is not None:
        try:
            since_ms = parse_since(since)
        except AgentStreamError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc

    async def go() -> None:
        if max_records is not None and max_records <= 0:
            return
        records = read_records(
            conn,
            target,
            codec=codec,
            partitions=partitions or None,
            start="beginning" if from_beginning else "end",
            offset=offset,
            since_ms=since_ms,
            key=key,
            idle_timeout_s=timeout,
            limit=max_records,
        )
        async with contextlib.aclosing(records):
            async for record in records:
                click.echo(record.as_json(form))

    run(go())


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


from agentstream.service import cli_inspect  # noqa: E402  (its commands need main's helpers)

cli_inspect.register(main)

if __name__ == "__main__":  # pragma: no cover
    main()
