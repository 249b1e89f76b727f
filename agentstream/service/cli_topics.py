"""``agentstream send`` and ``agentstream tail``: Kafka's console producer and consumer
habits (kcat, kafka-console-producer/consumer).

``send`` reads records from stdin, ``key<TAB>value`` (or ``--key-separator``), with
``-H name=value`` headers, and prints ``topic partition@offset`` for each; with ``--topic``
it needs the broker only, not the app's import. ``tail`` starts where asked
(``--from-beginning``, ``--offset``, ``--since``, ``--partition``), filters by ``--key``,
prints ``--format value|json|full``, and fails fast naming the known topics.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator

import click

from agentstream.errors import AgentStreamError
from agentstream.service._cli_common import APP_SPEC, broker_option, client_app, run

__all__ = ["send", "tail"]


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


@click.command()
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
    app, conn = client_app(broker, app_spec)
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
        return (args[0], None) if APP_SPEC.match(args[0]) else (None, args[0])
    return None, None


@click.command()
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
    from agentstream.service.codecs import codec_for
    from agentstream.service.reader import parse_since, read_records

    if app_spec is None and topic is None:
        raise click.UsageError("give APP (module:attribute), or --topic")
    app, conn = client_app(broker, app_spec)
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
