"""Scaling by adding input partitions while the workers run (issue 13), on a real Kafka:
the embedded broker has no CreatePartitions.

The agent (tests/chaos/rescale_app.py) keeps a per-key counter in short-term memory and
emits it with the input's per-key sequence number: ``count == seq`` on every output means
the key kept its memory (no reset), lost no input (no gap) and was processed in order.
Inputs flow throughout, from a producer that switches to each new partition count the
way a client whose metadata refreshes does.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agentstream.service.broker import admin_client, ensure_topics
from tests.brokers import Broker
from tests.chaos.rescale_harness import (
    KEYS,
    NOTICE_S,
    Feed,
    Group,
    check_outputs,
    cli,
    collect_all,
    finished,
    health,
    partition_of,
    rescale_cli,
)
from tests.harness import Topic, produce, wait_until


@pytest.fixture
def group_factory(
    real_kafka: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Callable[[str], Group]]:
    groups: list[Group] = []

    def make(guarantee: str = "at_least_once") -> Group:
        groups.append(Group(real_kafka.bootstrap, tmp_path, unique_name("rescale"), guarantee))
        return groups[-1]

    yield make
    for group in groups:
        for worker in group.workers:
            worker.kill()
            print(f"--- {worker.log_path.name}\n{worker.log_tail(30)}")  # shown on failure


async def test_partitions_raised_twice_under_load_keep_every_key_s_memory_and_order(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: two workers, 40 keys, inputs flowing throughout; the input topic goes from
    4 to 8 partitions through the admin client (as `kafka-topics --alter` does), the
    migration finishes, then to 12 with `agentstream rescale APP --partitions 12`; the
    producer switches to each new count. Then it stops.
    We expect: the command prints its progress and exits 0; the internal events and
    changelog topics follow the input topic to 12; every key's counter continues
    exactly (each output's count is its input's seq: no reset, no gap), each key's outputs
    come in input order, every input has its output. At-least-once: a rebalance may send
    an output of an input in flight again, the same output (same event id: its action
    replayed, not run again, as the counter shows)."""
    group = group_factory("at_least_once")
    await group.start_two()
    async with (
        Topic(group.bootstrap, group.output) as out,
        Feed(group.bootstrap, group.input, KEYS) as feed,
    ):
        await out.wait_for(200, 60, "outputs before the first change")
        await group.add_partitions(8)
        await feed.switch(8)
        await group.migrated(8)
        await out.wait_for(len(out.records) + 200, 60, "outputs after the first migration")
        lines = await rescale_cli(group, 12, feed)
        await group.migrated(12, 5)
        sent = await feed.stop()
        records = await collect_all(out, sent)
    assert any("8 -> 12 partitions" in line for line in lines), lines
    progress = [line for line in lines if line.startswith("migration ")]
    assert progress, lines  # a migration spans rebalances: seconds, the command reads each
    assert all(re.fullmatch(r"migration 8 -> 12: \d+/12 partitions moved", p) for p in progress)
    assert lines[-1] == f"done: {group.name}'s keys are spread over 12 partitions", lines
    check_outputs(records, sent, duplicates=True)
    internal = [f"{group.name}-events", f"{group.name}-state-changelog"]
    async with admin_client(group.bootstrap) as admin:
        described = await admin.describe_topics(internal)
    counts = {t["topic"]: len(t["partitions"]) for t in described}
    assert counts == dict.fromkeys(internal, 12), counts  # co-partitioned again


async def _sigkill_mid_migration(group: Group, isolation: str) -> tuple[list[Any], dict[str, int]]:
    one, _ = await group.start_two()
    async with (
        Topic(group.bootstrap, group.output, isolation) as out,
        Feed(group.bootstrap, group.input, KEYS) as feed,
    ):
        await out.wait_for(200, 60, "outputs before the change")
        await group.add_partitions(8)
        await feed.switch(8)

        async def under_way() -> bool:
            layout = await group.layout()
            return layout is not None and layout.partitions == 8

        await wait_until(under_way, NOTICE_S, "the workers to start the migration to 8", 0.1)
        layout = await group.layout()
        assert layout.migrating, f"the migration ended before the kill: {layout}"
        group.kill(one)
        await group.ready(group.start("one"))
        await group.migrated(8)
        await out.wait_for(len(out.records) + 200, 60, "outputs after the migration")
        sent = await feed.stop()
        return await collect_all(out, sent), sent


async def test_worker_sigkilled_mid_migration_at_least_once(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: as above (two workers, 40 keys, inputs flowing), the input topic goes from
    4 to 8 partitions and one worker is SIGKILLed while the migration runs, then restarted
    on its data dir.
    We expect: the migration completes; nothing is lost; every key's counter continues
    exactly and in order (an output may repeat, at least once, but with the same count:
    the counter never skips or resets)."""
    group = group_factory("at_least_once")
    records, sent = await _sigkill_mid_migration(group, "read_uncommitted")
    check_outputs(records, sent, duplicates=True)


async def test_worker_sigkilled_mid_migration_exactly_once(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: the same under processing_guarantee=exactly_once, the output read by a
    read_committed consumer.
    We expect: every input's output exactly once (0 lost, 0 duplicates), each key's
    counter continuing exactly and in order."""
    group = group_factory("exactly_once")
    records, sent = await _sigkill_mid_migration(group, "read_committed")
    check_outputs(records, sent, duplicates=False)


async def test_record_on_a_moved_key_s_old_partition_reaches_its_new_owner(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: two workers; the input topic goes from 4 to 8 partitions and the migration
    completes; then a producer with stale metadata sends one more input of three keys that
    moved to their OLD partitions (murmur2 % 4).
    We expect: each of those inputs is processed by the key's new owner, its counter
    continuing (count == seq), and the workers count them in
    agentstream_migration_stale_inputs_total."""
    group = group_factory("at_least_once")
    await group.start_two()
    async with (
        Topic(group.bootstrap, group.output) as out,
        Feed(group.bootstrap, group.input, KEYS) as feed,
    ):
        await out.wait_for(120, 60, "outputs before the change")
        await group.add_partitions(8)
        await feed.switch(8)
        await group.migrated(8)
        sent = await feed.stop()
        moved = [k for k in KEYS if partition_of(k, 8) != partition_of(k, 4)][:3]
        stale = AIOKafkaProducer(bootstrap_servers=group.bootstrap, acks="all")
        await stale.start()
        try:
            for key in moved:
                sent[key] += 1
                value = json.dumps({"seq": sent[key]}).encode()
                await stale.send_and_wait(
                    group.input, value, key=key.encode(), partition=partition_of(key, 4)
                )
        finally:
            await stale.stop()
        records = await collect_all(out, sent)
    check_outputs(records, sent, duplicates=True)  # replays of a rebalance, as above
    await wait_until(
        lambda: group.metric("agentstream_migration_stale_inputs_total") >= 1,
        10,
        "agentstream_migration_stale_inputs_total >= 1",
    )


async def test_input_topic_recreated_with_fewer_partitions_than_the_state_is_refused(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: an app's input topic went from 4 to 8 partitions (its keys are laid out for
    8); the workers stop; someone deletes the input topic and creates it again with 4.
    We expect: a worker refuses to start, exiting non-zero with an error that names both
    counts (4 and 8) and the way out."""
    group = group_factory("at_least_once")
    await ensure_topics(group.bootstrap, {group.input: 4, group.output: 4})
    worker = await group.start("one").ready(60)
    await produce(group.bootstrap, group.input, [(k, {"seq": 1}) for k in KEYS])
    await group.add_partitions(8)
    await group.migrated(8)
    group.live.remove(worker)
    worker.stop()
    async with admin_client(group.bootstrap) as admin:
        await admin.delete_topics([group.input])

    async def recreated() -> bool:
        with contextlib.suppress(Exception):  # deletion is asynchronous: retry
            await ensure_topics(group.bootstrap, {group.input: 4}, timeout_s=2)
            return True
        return False

    await wait_until(recreated, 60, f"{group.input} recreated with 4 partitions", 0.5)
    worker = group.start("one")
    assert worker.proc is not None
    await wait_until(lambda: worker.proc.poll() is not None, 60, "the worker to refuse to start")
    assert worker.proc.returncode != 0
    errors = [line for line in worker.log_tail(200).splitlines() if line.startswith("Error:")]
    assert errors, f"no error line:\n{worker.log_tail()}"
    message = errors[-1]
    assert re.search(r"\b4\b", message) and re.search(r"\b8\b", message), message
    assert "Recreate it" in message, message  # the way out


async def test_health_and_event_log_show_the_migration(
    group_factory: Callable[[str], Group], tmp_path: Path
) -> None:
    """Scenario: two workers, each writing an event log, inputs flowing; the input topic
    goes from 4 to 8 partitions and /health of both workers is polled throughout.
    We expect: while it runs, a worker's /health shows "migration" going from 4 to 8 with
    its progress (partitions done of 8, keys moved, keys to move), null again once done;
    the event logs have one KeyMoved line per key whose partition changed, from its old
    partition to its new one, and none for the others."""
    group = group_factory("at_least_once")
    logs = {label: tmp_path / f"eventlog-{label}.jsonl" for label in ("one", "two")}
    await ensure_topics(group.bootstrap, {group.input: 4, group.output: 4})
    workers = [
        await group.start(label, AGENTSTREAM_EVENT_LOG=str(path)).ready(60)
        for label, path in logs.items()
    ]
    seen: list[dict[str, Any]] = []
    async with (
        Topic(group.bootstrap, group.output) as out,
        Feed(group.bootstrap, group.input, KEYS) as feed,
    ):
        await out.wait_for(len(KEYS), 60, "an output of every key")
        await group.add_partitions(8)
        await feed.switch(8)

        async def migrating() -> bool:
            group.check_alive()
            seen.extend(m for w in workers if (m := health(w).get("migration")))
            return bool(seen)

        await wait_until(migrating, NOTICE_S, '"migration" in a worker\'s /health', 0.05)
        await group.migrated(8)
        await feed.stop()
    await wait_until(  # each worker reads the finished layout within a few seconds
        lambda: all(health(w).get("migration", "absent") is None for w in workers),
        15,
        '"migration": null in both workers\' /health',
    )
    for migration in seen:
        assert (migration["from"], migration["to"], migration["partitions"]) == (4, 8, 8)
        assert 0 <= migration["partitions_done"] <= 8, migration
        assert migration["keys_moved"] >= 0 and migration["keys_to_move"] >= 0, migration

    expected_moves = {
        k: [(partition_of(k, 4), partition_of(k, 8))]
        for k in KEYS
        if partition_of(k, 8) != partition_of(k, 4)
    }
    moves: dict[str, list[tuple[int, int]]] = {}

    def logged() -> bool:  # lines reach the file within a second
        moves.clear()
        for path in logs.values():
            for line in path.read_text().splitlines() if path.exists() else ():
                entry = json.loads(line)
                if entry["event_type"].endswith(".KeyMoved"):
                    move = (entry["payload"]["source"], entry["payload"]["destination"])
                    moves.setdefault(entry["key"], []).append(move)
        return moves == expected_moves

    with contextlib.suppress(AssertionError):
        await wait_until(logged, 5, "a KeyMoved line per moved key")
    assert moves == expected_moves


async def test_rescale_refuses_fewer_partitions_and_changes_nothing(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: `agentstream rescale APP --partitions 2` on an app whose input topic has 4.
    We expect: exit 1 with one line saying Kafka cannot shrink a topic, naming both counts;
    the topic keeps its 4 partitions."""
    group = group_factory("at_least_once")
    await ensure_topics(group.bootstrap, {group.input: 4})
    code, out = await finished(await cli(group, "--partitions", "2"), 60)
    assert code == 1, out
    assert "cannot shrink" in out and "has 4 partitions" in out and " 2" in out, out
    assert "Traceback" not in out, out
    assert await group.input_partitions() == 4


async def test_rescale_without_workers_times_out_naming_what_it_waited_for(
    group_factory: Callable[[str], Group],
) -> None:
    """Scenario: `agentstream rescale APP --partitions 8 --timeout 3` while no worker of
    the app runs.
    We expect: the topic gets 8 partitions (the change is Kafka's), and the command exits 1
    after about 3 s saying what it waited for and asking whether the workers are running."""
    group = group_factory("at_least_once")
    await ensure_topics(group.bootstrap, {group.input: 4})
    code, out = await finished(await cli(group, "--partitions", "8", "--timeout", "3"), 60)
    assert code == 1, out
    assert "4 -> 8 partitions" in out, out
    assert "timed out after 3 s" in out and "are the workers running?" in out, out
    assert await group.input_partitions() == 8
