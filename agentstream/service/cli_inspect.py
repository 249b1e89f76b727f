"""The inspection commands of the CLI: ``inspect``, ``dead-letters`` and ``events``.

``inspect`` asks a worker's web port (``GET /keys/{key}``), following a 404 to the worker
that owns the key. ``dead-letters`` reads the app's dead-letter topic (no consumer group:
nothing is committed) and can re-inject dead letters into the input topic once the cause
is fixed. ``events`` prints one input's tree of events from an event log file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import click

from agentstream.errors import AgentStreamError
from agentstream.service._cli_common import (
    broker_option,
    client_app,
    load_app,
    log_level_option,
    run,
)

__all__ = ["register"]

REDRIVEN_FROM = "agentstream-redriven-from"


def register(main: click.Group) -> None:
    """Add the inspection commands to ``main``."""
    for sub in dead_letters.commands.values():
        log_level_option(sub)
    main.add_command(inspect_key)
    main.add_command(dead_letters)
    main.add_command(events)


# -- inspect -----------------------------------------------------------------------------


def _web_url(app: Any) -> str:
    s = app.settings
    host = "127.0.0.1" if s.web_host in ("0.0.0.0", "::", "") else s.web_host
    return f"http://{host}:{s.web_port}"


async def _get_key(url: str, key: str) -> tuple[int, dict[str, Any]]:
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"{url.rstrip('/')}/keys/{quote(key, safe='')}") as response,
        ):
            return response.status, await response.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise click.ClickException(
            f"no worker answers at {url} ({exc}); pass the worker's web address with --url"
        ) from exc


@click.command("inspect")
@click.argument("app_spec", metavar="APP")
@click.option("--key", required=True, help="The record key.")
@click.option("--url", default=None, help="A worker's web address (default: from APP).")
def inspect_key(app_spec: str, key: str, url: str | None) -> None:
    """Show what APP's workers hold for a key: seq, current and pending inputs, in-flight
    actions with their recorded steps, short-term memory, owning partition and worker.

    Asks one worker's GET /keys/{key}; when another worker owns the key, asks that one.
    """
    base = url or _web_url(load_app(app_spec))
    status, body = run(_get_key(base, key))
    if status == 404 and body.get("owner"):
        click.echo(f"(key {key!r} is owned by the worker at {body['owner']})", err=True)
        status, body = run(_get_key(body["owner"], key))
    if status != 200:
        raise click.ClickException(body.get("error") or f"GET /keys/{key} answered {status}")
    click.echo(json.dumps(body, indent=2, ensure_ascii=False, default=repr))


# -- dead letters ----------------------------------------------------------------------


@click.group("dead-letters")
@click.argument("app_spec", metavar="APP")
@click.pass_context
def dead_letters(ctx: click.Context, app_spec: str) -> None:
    """List APP's dead letters, or re-inject them into the input topic:
    `agentstream dead-letters APP list` and `... APP redrive [--key K] [--since T]`."""
    ctx.obj = app_spec


def _dead_letter_options(fn: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.pass_obj,
        click.option("--key", default=None, help="Only dead letters of this key."),
        click.option(
            "--since", default=None, metavar="TIME", help="Only those since TIME: 10m, 2h, ISO."
        ),
        broker_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _read_dead_letters(
    app_spec: str, key: str | None, since: str | None, broker: str | None
) -> tuple[Any, Any, list[Any]]:
    from agentstream.service.codecs import codec_for
    from agentstream.service.reader import parse_since, read_records

    app, conn = client_app(broker, app_spec)
    assert app is not None
    try:
        since_ms = None if since is None else parse_since(since)
    except AgentStreamError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from exc

    async def collect() -> list[Any]:
        found = []
        async for record in read_records(
            conn,
            app.dead_letter_topic,
            codec=codec_for(app.settings.input_codec),
            since_ms=since_ms,
            key=key,
            follow=False,
        ):
            found.append(record)
        return found

    return app, conn, run(collect())


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dead_letters.command("list")
@_dead_letter_options
@click.option(
    "--format",
    "form",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: readable; json: one object per dead letter with every header.",
)
@click.option("--traceback", is_flag=True, help="Show each dead letter's traceback too.")
def list_dead_letters(
    app_spec: str,
    key: str | None,
    since: str | None,
    broker: str | None,
    form: str,
    traceback: bool,
) -> None:
    """List APP's dead letters with their reason, error and where they came from."""
    app, _, found = _read_dead_letters(app_spec, key, since, broker)
    for record in found:
        if form == "json":
            click.echo(record.as_json("full"))
            continue
        h = record.headers
        source = h.get("agentstream-source-topic")
        where = (
            f"{source} {h.get('agentstream-source-partition')}@{h.get('agentstream-source-offset')}"
            if source
            else "?"
        )
        click.echo(
            f"{record.partition}@{record.offset} {_when(record.timestamp)} key={record.key!r} "
            f"reason={h.get('agentstream-reason', '?')} from {where}"
        )
        action = h.get("agentstream-action")
        context = [f"action {action!r}"] if action else []
        if "agentstream-error-location" in h:
            context.append(f"at {h['agentstream-error-location']}")
        error = f"{h.get('agentstream-error-type', '?')}: {h.get('agentstream-error-message', '')}"
        click.echo(f"  {error}" + (f" ({' '.join(context)})" if context else ""))
        click.echo(f"  value: {json.dumps(record.value, ensure_ascii=False, default=repr)}")
        if REDRIVEN_FROM in h:
            click.echo(f"  (redriven before, from {h[REDRIVEN_FROM]})")
        if traceback and "agentstream-error-traceback" in h:
            for line in h["agentstream-error-traceback"].splitlines():
                click.echo(f"    {line}")
    click.echo(f"{len(found)} dead letter(s) on {app.dead_letter_topic}", err=True)


@dead_letters.command("redrive")
@_dead_letter_options
@click.option("--dry-run", is_flag=True, help="Show what would be re-injected, send nothing.")
def redrive(
    app_spec: str, key: str | None, since: str | None, broker: str | None, dry_run: bool
) -> None:
    """Re-inject APP's dead-lettered inputs (of --key, since --since) into the input topic,
    after the cause is fixed. Each goes with its original key and value, and a header
    naming the dead letter it came from; every run re-injects every match again (narrow it
    with --key and --since). Outputs that could not be encoded are not inputs: skipped."""
    from agentstream.service.client import OutRecord, produce

    app, conn, found = _read_dead_letters(app_spec, key, since, broker)
    records = []
    for record in found:
        origin = f"{app.dead_letter_topic}/{record.partition}@{record.offset}"
        source = record.headers.get("agentstream-source-topic", app.input_topic)
        if record.headers.get("agentstream-reason") == "encode" or source != app.input_topic:
            # an output that could not be encoded, or a routed event: not an input
            click.echo(f"skipped {origin}: not an input of {app.input_topic}", err=True)
            continue
        records.append(OutRecord(record.key, record.raw_value, [(REDRIVEN_FROM, origin.encode())]))
        if dry_run:
            click.echo(f"would re-inject {origin} key={record.key!r} into {app.input_topic}")
    if dry_run or not records:
        click.echo(f"{0 if dry_run else len(records)} dead letter(s) re-injected", err=True)
        return

    def sent(record: OutRecord, partition: int, offset: int) -> None:
        origin = dict(record.headers)[REDRIVEN_FROM].decode()
        click.echo(f"{origin} -> {app.input_topic} {partition}@{offset} key={record.key!r}")

    count = run(produce(conn, app.input_topic, records, sent))
    click.echo(f"{count} dead letter(s) re-injected into {app.input_topic}", err=True)


# -- events --------------------------------------------------------------------------------


def _short(value: Any, width: int = 70) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 3] + "..."


def _type_short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _tree_lines(records: list[Any]) -> Iterable[str]:
    """``event → action → sent events`` as an indented tree, inputs at the roots."""
    by_id: dict[str, Any] = {}
    repeats: dict[str, int] = defaultdict(int)
    for record in records:
        ident = record.event.id
        repeats[ident] += 1
        by_id[ident] = record  # the latest attempt (a restart logs an input again)
    children: dict[str | None, list[Any]] = defaultdict(list)
    for record in by_id.values():
        parent = record.event.parent_id
        children[parent if parent in by_id else None].append(record)

    def event_line(record: Any) -> str:
        event = record.event
        payload = event.attributes()
        if record.event_type.endswith(".DurableCallLogged"):
            took = (
                "" if payload.get("outcome") == "replayed" else f", {payload.get('latency_ms')} ms"
            )
            error = f": {payload['error']}" if payload.get("error") else ""
            return (
                f"durable call #{payload.get('position')} {payload.get('function')} "
                f"-> {payload.get('outcome')}{took}{error}"
            )
        shown = payload.get("input", payload.get("output", payload))
        flags = []
        if getattr(event, "replayed", False) or record.replayed:
            flags.append("replayed")
        if repeats[event.id] > 1:
            flags.append(f"logged {repeats[event.id]}x")
        extra = f"  [{', '.join(flags)}]" if flags else ""
        return f"{_type_short(record.event_type)} {_short(shown)}{extra}"

    def walk(record: Any, indent: str) -> Iterable[str]:
        by_action: dict[str | None, list[Any]] = defaultdict(list)
        for child in children.get(record.event.id, []):
            by_action[child.action].append(child)
        actions = list(by_action.items())
        for index, (action, sent) in enumerate(actions):
            last = index == len(actions) - 1
            yield f"{indent}{'└─' if last else '├─'} {action}"
            inner = indent + ("   " if last else "│  ")
            for position, child in enumerate(sent):
                child_last = position == len(sent) - 1
                yield f"{inner}{'└─' if child_last else '├─'} {event_line(child)}"
                yield from walk(child, inner + ("   " if child_last else "│  "))

    for root in children.get(None, []):
        yield event_line(root)
        yield from walk(root, "")


class _Logged:
    """An event-log line as the tree needs it."""

    def __init__(self, record: Any, raw: dict[str, Any]):
        self.event = record.event
        self.action = record.action
        self.event_type = raw.get("event_type", type(record.event).type_name())
        self.replayed = bool(raw.get("replayed"))
        self.time = record.time


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", required=True, help="The record key.")
@click.option("--seq", type=int, default=None, help="The key's input number (default: the last).")
def events(path: str, key: str, seq: int | None) -> None:
    """Print one input's tree of events (event -> action -> sent events) from the event log
    at PATH (--event-log of the worker)."""
    from agentstream.observability.eventlog_reader import parse_event_log_record

    by_seq: dict[int, list[_Logged]] = defaultdict(list)
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if str(raw.get("key")) != key:
                    continue
                record = parse_event_log_record(line)
            except (ValueError, AgentStreamError):
                continue  # a line cut short by a crash
            by_seq[record.seq].append(_Logged(record, raw))
    if not by_seq:
        raise click.ClickException(f"no events of key {key!r} in {path}")
    chosen = max(by_seq) if seq is None else seq
    if chosen not in by_seq:
        raise click.ClickException(
            f"key {key!r} has no input {chosen} in {path}; it has {sorted(by_seq)}"
        )
    records = by_seq[chosen]
    click.echo(f"key {key!r} input {chosen} ({_when(int(records[0].time * 1000))}):")
    for line in _tree_lines(records):
        click.echo(f"  {line}")
