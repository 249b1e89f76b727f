"""``agentstream rescale APP --partitions N``: raise the input topic's partition count and
wait until the running workers have moved every key that changed partition.

The command does what ``kafka-topics --alter --partitions N`` does (CreatePartitions on
the input topic), then follows the app's key layout (:func:`~agentstream.service.layout.
read_layout`, the record the workers keep in ``<app>-layout``) until it says ``N``
partitions and no migration under way, printing a line each time it changes. The
migration itself is the workers' work: this command only starts it and watches it, so it
may be interrupted and run again (with the same N it only waits).

Kafka cannot shrink a topic: a smaller N is refused before anything is changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import click

from agentstream.errors import AgentStreamError, ConfigurationError
from agentstream.service._cli_common import broker_option, client_app, run
from agentstream.service.app import AgentApp
from agentstream.service.kafka_errors import kafka_errors

__all__ = ["RescaleTimeout", "rescale", "rescale_app"]

POLL_S = 1.0
"""How often the layout is read while waiting."""


class RescaleTimeout(AgentStreamError):
    """The migration did not finish in time (no worker running, or one stuck)."""


async def partition_counts(
    app: AgentApp, bootstrap: str, client_kwargs: dict[str, Any]
) -> tuple[int, int | None]:
    """The partition counts of the input topic and of the changelog (None: missing), in
    one metadata request."""
    from agentstream.service.broker import admin_client

    with kafka_errors("describe the input topic", topic=app.input_topic):
        async with admin_client(bootstrap, client_kwargs, timeout_s=30) as admin:
            described = await admin.describe_topics([app.input_topic, app.changelog_topic])
    counts = {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}
    if app.input_topic not in counts:
        raise ConfigurationError(
            f"{app.name}'s input topic {app.input_topic!r} does not exist: start a worker "
            "of the app first, it creates it"
        )
    return counts[app.input_topic], counts.get(app.changelog_topic)


async def rescale_app(
    app: AgentApp,
    bootstrap: str,
    client_kwargs: dict[str, Any],
    partitions: int,
    timeout_s: float,
    echo: Callable[[str], None],
) -> None:
    """Raise ``app``'s input topic to ``partitions`` and wait for the migration.

    Raises:
        ConfigurationError: ``partitions`` is below the current count (Kafka cannot shrink
            a topic), or the app's layout is at more partitions than its input topic.
        RescaleTimeout: the layout did not reach ``partitions`` within ``timeout_s``.
    """
    from aiokafka.admin import NewPartitions

    from agentstream.service.broker import admin_client

    topic = app.input_topic
    current, state = await partition_counts(app, bootstrap, client_kwargs)
    if partitions < current:
        raise ConfigurationError(
            f"{app.name}'s input topic {topic!r} has {current} partitions; Kafka cannot "
            f"shrink a topic to {partitions}. Fewer partitions means a new app (new topics, "
            f"empty state): see 'Scaling: workers and partitions' in docs/operations.md"
        )
    if partitions == current:
        echo(f"{topic} has {partitions} partitions already: nothing to change")
    else:
        with kafka_errors("add partitions", topic=topic):
            async with admin_client(bootstrap, client_kwargs, timeout_s=30) as admin:
                await admin.create_partitions({topic: NewPartitions(total_count=partitions)})
        echo(
            f"{topic}: {current} -> {partitions} partitions; the workers notice within "
            "30 s and move the keys whose partition changed"
        )
    # Raised here: a migration must begin. Else no record may mean none is needed.
    unrecorded = (state or app.settings.partitions) if partitions == current else None
    await wait_for_layout(app, bootstrap, client_kwargs, partitions, unrecorded, timeout_s, echo)


async def wait_for_layout(
    app: AgentApp,
    bootstrap: str,
    client_kwargs: dict[str, Any],
    partitions: int,
    unrecorded: int | None,
    timeout_s: float,
    echo: Callable[[str], None],
) -> None:
    """Follow ``app``'s layout until it is at ``partitions`` with no migration under way,
    echoing each change of its progress.

    ``unrecorded``: the count the app's keys follow while no layout is recorded (no
    migration ever began: its changelog's partition count); None when a migration must
    begin first (the input topic was just raised)."""
    from agentstream.service.layout import read_layout

    deadline = time.monotonic() + timeout_s
    shown: object = ()
    while True:
        with kafka_errors("read the app's layout", topic=app.layout_topic):
            layout = await read_layout(bootstrap, client_kwargs, app.name)
        if layout is None:
            if partitions == unrecorded:  # no migration ever began, none is needed
                echo(f"done: {app.name}'s keys are spread over {partitions} partitions")
                return
            state: object = None
            line = f"waiting for the workers of {app.name} to notice {partitions} partitions"
        elif layout.partitions > partitions:
            raise ConfigurationError(
                f"{app.name}'s state is laid out for {layout.partitions} partitions but its "
                f"input topic {app.input_topic!r} has {partitions}: was the topic recreated? "
                "See 'Scaling: workers and partitions' in docs/operations.md"
            )
        elif layout.partitions < partitions and layout.migrating:  # one migration at a time
            state = ("before", layout.previous, layout.partitions, len(layout.moved))
            line = (
                f"migration {layout.previous} -> {layout.partitions}: {len(layout.moved)}/"
                f"{layout.partitions} partitions moved (then to {partitions})"
            )
        elif layout.partitions < partitions:
            state = ("behind", layout.partitions)
            line = (
                f"waiting for the workers of {app.name} to notice {partitions} partitions "
                f"(its keys are laid out for {layout.partitions})"
            )
        elif layout.migrating:
            state = ("moving", layout.previous, layout.partitions, len(layout.moved))
            line = (
                f"migration {layout.previous} -> {layout.partitions}: "
                f"{len(layout.moved)}/{layout.partitions} partitions moved"
            )
        else:
            echo(f"done: {app.name}'s keys are spread over {partitions} partitions")
            return
        if state != shown:
            echo(line)
            shown = state
        if time.monotonic() >= deadline:
            raise RescaleTimeout(
                f"timed out after {timeout_s:g} s waiting for the workers of {app.name} to "
                f"move its keys to {partitions} partitions (last seen: {line}): are the "
                "workers running? The migration goes on while they run; the same command "
                "again waits for it"
            )
        await asyncio.sleep(POLL_S)


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    required=True,
    help="The input topic's new partition count (more than today: Kafka cannot shrink).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600,
    show_default=True,
    help="Seconds to wait for the workers to finish moving the keys.",
)
@broker_option
def rescale(app_spec: str, partitions: int, timeout: float, broker: str | None) -> None:
    """Raise APP's input topic to --partitions while its workers run, and wait until they
    have moved every key whose partition changed (with its memory, pending inputs and
    action state), printing the progress.

    Same as `kafka-topics --alter --partitions N` on the input topic, followed by waiting.
    With the current count it only waits for a migration in progress. Add workers
    afterwards, up to the new count.
    """
    app, conn = client_app(broker, app_spec)
    assert app is not None
    if conn.embedded:
        raise click.ClickException(
            "the embedded development broker cannot add partitions (no CreatePartitions): "
            "rescale on a real Kafka"
        )
    run(
        rescale_app(app, conn.bootstrap, conn.client_kwargs, partitions, timeout, click.echo),
        conn.bootstrap,
    )
