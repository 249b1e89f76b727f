"""Scaling by adding input partitions while the workers run (issue 13), on a real Kafka:
the embedded broker has no CreatePartitions.

The agent (tests/chaos/rescale_app.py) keeps a per-key counter in short-term memory and
emits it with the input's per-key sequence number: ``count == seq`` on every output means
the key kept its memory (no reset), lost no input (no gap) and was processed in order.
Inputs flow throughout, from a producer that switches to each new partition count the
way a client whose metadata refreshes does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewPartitions
from aiokafka.partitioner import murmur2

from agentstream.service.broker import admin_client, ensure_topics
from tests.brokers import Broker
from tests.harness import ROOT, Topic, WorkerProcess, decoded, produce, wait_until

KEYS = [f"key-{i:02d}" for i in range(40)]
APP = "tests.chaos.rescale_app:app"
NOTICE_S = 90  # workers notice within ~15 s; then the partitions rebalance twice


def _partition(key: str, count: int) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % count  # Kafka's default partitioner


class Group:
    """Worker processes of tests/chaos/rescale_app.py sharing one app id."""

    def __init__(self, bootstrap: str, directory: Path, name: str, guarantee: str):
        self.bootstrap = bootstrap
        self.directory = directory
        self.name = name
        self.input = f"{name}-in"
        self.output = f"{name}-out"
        self.env = {
            "E2E_APP": name,
            "E2E_IN": self.input,
            "E2E_OUT": self.output,
            "AGENTSTREAM_PARTITIONS": "4",
            "AGENTSTREAM_PROCESSING_GUARANTEE": guarantee,
        }
        self.workers: list[WorkerProcess] = []
        self.live: list[WorkerProcess] = []  # started and not killed by the test

    def start(self, label: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            APP,
            f"kafka://{self.bootstrap}",
            self.directory / f"data-{label}",
            {**self.env, **env},
            self.directory / f"worker-{label}.log",
        )
        self.workers.append(worker)
        self.live.append(worker)
        return worker.start()

    async def ready(self, worker: WorkerProcess, timeout: float = 90) -> WorkerProcess:
        """``worker.ready``, saying on failure what its /health answered."""
        try:
            return await worker.ready(timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its /health: {_health(worker)}") from None

    def kill(self, worker: WorkerProcess) -> None:
        self.live.remove(worker)
        worker.kill()

    def check_alive(self) -> None:
        """Fail at once, with its log, if a worker the test did not kill has exited."""
        for worker in self.live:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise AssertionError(
                    f"{worker.log_path.name} exited ({worker.proc.returncode}):\n"
                    f"{worker.log_tail()}"
                )

    async def start_two(self) -> tuple[WorkerProcess, WorkerProcess]:
        """Two ready workers that share the input partitions."""
        await ensure_topics(self.bootstrap, {self.input: 4, self.output: 4})
        one = await self.start("one").ready(60)
        two = await self.start("two").ready(60)

        def owns_input(worker: WorkerProcess) -> bool:  # it has a lag of an input partition
            return f'topic="{self.input}"' in worker.metrics()

        await wait_until(lambda: owns_input(one) and owns_input(two), 60, "partitions split")
        return one, two

    async def add_partitions(self, count: int) -> None:
        """What ``kafka-topics --alter --partitions`` does."""
        async with admin_client(self.bootstrap) as admin:
            await admin.create_partitions({self.input: NewPartitions(total_count=count)})

    async def input_partitions(self) -> int:
        async with admin_client(self.bootstrap) as admin:
            (described,) = await admin.describe_topics([self.input])
        return len(described["partitions"])

    async def layout(self) -> Any:
        from agentstream.service.layout import read_layout  # the worker's side of issue 13

        return await read_layout(self.bootstrap, {}, self.name)

    async def migrated(self, partitions: int, timeout: float = NOTICE_S) -> None:
        """Wait until the layout is at ``partitions`` with no migration under way."""
        seen: list[Any] = [None]

        async def done() -> bool:
            self.check_alive()
            seen[0] = layout = await self.layout()
            return layout is not None and layout.partitions == partitions and not layout.migrating

        try:
            await wait_until(done, timeout, f"the migration to {partitions} partitions", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc} (last layout: {seen[0]})") from None

    def metric(self, name: str) -> float:
        """``name`` summed over the live workers."""
        return sum(w.metric(name) for w in self.live)


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


class Feed:
    """Produces ``{"seq": n}`` for every key in turn, a round every ``interval_s``, until
    stopped; ``sent[key]`` is the key's last sequence number acknowledged by Kafka.

    :meth:`switch` is a producer that switches to a new partition count: what it sent
    is acknowledged before the next producer, which sees the new count, sends anything."""

    def __init__(self, bootstrap: str, topic: str, keys: list[str], interval_s: float = 0.25):
        self.bootstrap = bootstrap
        self.topic = topic
        self.keys = keys
        self.interval_s = interval_s
        self.sent = dict.fromkeys(keys, 0)
        self._stop = asyncio.Event()
        self._switch: tuple[int, asyncio.Future[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            with contextlib.suppress(Exception):
                await self._task  # the test's own failure is the one to report

    async def stop(self) -> dict[str, int]:
        """Stop producing; the sequence numbers sent, each acknowledged."""
        self._stop.set()
        assert self._task is not None
        await self._task
        return self.sent

    async def switch(self, partitions: int) -> None:
        """Flush, and produce from now on with a producer that sees ``partitions``."""
        assert self._task is not None
        if self._task.done():
            await self._task  # raises what stopped it
        done = asyncio.get_running_loop().create_future()
        self._switch = (partitions, done)
        await asyncio.wait_for(done, 30)

    async def _producer(self, partitions: int | None = None) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        deadline = time.monotonic() + 20
        while (
            partitions is not None and len(await producer.partitions_for(self.topic)) < partitions
        ):
            assert time.monotonic() < deadline, f"the producer never saw {partitions} partitions"
            await producer.client.force_metadata_update()
            await asyncio.sleep(0.1)
        return producer

    async def _run(self) -> None:
        producer = await self._producer()
        try:
            while not self._stop.is_set():
                if self._switch is not None:
                    partitions, done = self._switch
                    self._switch = None
                    try:
                        await producer.stop()  # flushes: all before the switch is acked
                        producer = await self._producer(partitions)
                    except BaseException as exc:
                        done.set_exception(exc)
                        raise
                    done.set_result(None)
                sends = []
                for key in self.keys:
                    value = json.dumps({"seq": self.sent[key] + 1}).encode()
                    sends.append(await producer.send(self.topic, value, key=key.encode()))
                await asyncio.gather(*sends)
                for key in self.keys:
                    self.sent[key] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            await producer.stop()


def expected(sent: dict[str, int]) -> set[tuple[str, int]]:
    return {(key, seq) for key, last in sent.items() for seq in range(1, last + 1)}


async def collect_all(out: Topic, sent: dict[str, int], timeout: float = 90) -> list[Any]:
    """Every input's output, then a while longer (a duplicate comes after its first copy)."""
    wanted = expected(sent)
    try:
        await out.wait_for_values(wanted, timeout, "outputs of every input")
    except AssertionError as exc:
        missing = sorted(wanted - {(k, v["value"]) for k, v, _ in decoded(out.records)})
        keys: dict[str, list[int]] = {}
        for key, seq in missing:
            keys.setdefault(key, []).append(seq)
        where = [
            f"{_where(k)}: {len(s)} of {sent[k]}, seq {s[:3]}..{s[-1]}"
            for k, s in sorted(keys.items())
        ]
        raise AssertionError(f"{exc}; {len(missing)} missing:\n" + "\n".join(where)) from None
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        await out.poll()
    return out.records


def _where(key: str) -> str:
    """A key with its partitions at 4, 8 and 12 partitions (where it moved)."""
    return f"{key} (partition {'/'.join(str(_partition(key, n)) for n in (4, 8, 12))} of 4/8/12)"


def check_outputs(records: list[Any], sent: dict[str, int], *, duplicates: bool) -> None:
    """Each key's counter continues exactly (every output's count is its input's seq: no
    reset, no gap, processed in order), every input has an output, each output partition
    shows a key's outputs in input order; repeated outputs only where ``duplicates``."""
    problems: list[str] = []
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    ids: dict[tuple[str, int], set[str]] = {}
    for record, (key, value, headers) in zip(records, decoded(records), strict=True):
        by_key.setdefault(key, []).append((record.partition, value["value"], value["count"]))
        ids.setdefault((key, value["value"]), set()).add(headers.get("agentstream-event-id", ""))
    for key, last in sent.items():
        outputs = by_key.get(key, [])
        broken = [(seq, count) for _, seq, count in outputs if seq != count]
        if broken:
            problems.append(f"{_where(key)}: counter broke, (seq, count) {broken[:5]}")
        seqs = [seq for _, seq, _ in outputs]
        lost = sorted(set(range(1, last + 1)) - set(seqs))
        if lost:
            problems.append(f"{_where(key)}: {len(lost)} inputs without an output: {lost[:5]}")
        repeated = sorted({seq for seq in seqs if seqs.count(seq) > 1})
        if repeated and not duplicates:
            same = all(len(ids[key, seq]) == 1 for seq in repeated)
            problems.append(
                f"{_where(key)}: duplicate outputs of seq {repeated[:5]} "
                f"({'same event id: replayed' if same else 'DIFFERENT event ids'})"
            )
        elif any(len(ids[key, seq]) > 1 for seq in repeated):  # a repeat is the same output
            problems.append(f"{_where(key)}: seq {repeated[:5]} output with different event ids")
        for partition in sorted({p for p, _, _ in outputs}):
            firsts = list(dict.fromkeys(seq for p, seq, _ in outputs if p == partition))
            wrong = next((i for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1]), None)
            if wrong is not None:
                problems.append(
                    f"{_where(key)}: out of order on output partition {partition}: "
                    f"... {firsts[max(wrong - 3, 0) : wrong + 4]} ..."
                )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])


async def cli(group: Group, *args: str) -> asyncio.subprocess.Process:
    """``agentstream rescale APP ARGS...`` in its own process, as a user runs it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentstream",
        "rescale",
        APP,
        "--broker",
        f"kafka://{group.bootstrap}",
        *args,
        cwd=ROOT,
        env={**os.environ, **group.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def finished(proc: asyncio.subprocess.Process, timeout: float) -> tuple[int, str]:
    """The command's exit code and output (killed if it runs past ``timeout``)."""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def rescale_cli(group: Group, partitions: int, feed: Feed) -> list[str]:
    """``agentstream rescale APP --partitions N``; the feed switches to N once the topic
    has it. Returns the command's output lines (it must exit 0)."""
    proc = await cli(group, "--partitions", str(partitions), "--timeout", str(NOTICE_S))
    done = asyncio.ensure_future(finished(proc, NOTICE_S + 60))

    async def raised() -> bool:
        return done.done() or await group.input_partitions() == partitions

    await wait_until(raised, 60, f"the rescale command to raise {group.input} to {partitions}")
    if not done.done():
        await feed.switch(partitions)
    code, out = await done
    assert code == 0, f"rescale exited {code}:\n{out}"
    return out.splitlines()


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
    come in input order, every input has its output, and none is duplicated."""
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
    check_outputs(records, sent, duplicates=False)
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
        moved = [k for k in KEYS if _partition(k, 8) != _partition(k, 4)][:3]
        stale = AIOKafkaProducer(bootstrap_servers=group.bootstrap, acks="all")
        await stale.start()
        try:
            for key in moved:
                sent[key] += 1
                value = json.dumps({"seq": sent[key]}).encode()
                await stale.send_and_wait(
                    group.input, value, key=key.encode(), partition=_partition(key, 4)
                )
        finally:
            await stale.stop()
        records = await collect_all(out, sent)
    check_outputs(records, sent, duplicates=False)
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
            seen.extend(m for w in workers if (m := _health(w).get("migration")))
            return bool(seen)

        await wait_until(migrating, NOTICE_S, '"migration" in a worker\'s /health', 0.05)
        await group.migrated(8)
        await feed.stop()
    await wait_until(  # each worker reads the finished layout within a few seconds
        lambda: all(_health(w).get("migration", "absent") is None for w in workers),
        15,
        '"migration": null in both workers\' /health',
    )
    for migration in seen:
        assert (migration["from"], migration["to"], migration["partitions"]) == (4, 8, 8)
        assert 0 <= migration["partitions_done"] <= 8, migration
        assert migration["keys_moved"] >= 0 and migration["keys_to_move"] >= 0, migration

    expected_moves = {
        k: [(_partition(k, 4), _partition(k, 8))]
        for k in KEYS
        if _partition(k, 8) != _partition(k, 4)
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


def _health(worker: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.web_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503 while recovering: the body still says why
        return dict(json.loads(exc.read()))
    except OSError:
        return {}


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
