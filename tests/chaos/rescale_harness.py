"""What the rescale tests (tests/chaos/test_rescale.py) share: worker processes of
tests/chaos/rescale_app.py, a feed of per-key sequenced inputs whose producer switches to
a new partition count, the check of the outputs, and ``agentstream rescale`` run as a
user runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewPartitions
from aiokafka.partitioner import murmur2

from agentstream.service.broker import admin_client, ensure_topics
from tests.harness import ROOT, Topic, WorkerProcess, decoded, wait_until

KEYS = [f"key-{i:02d}" for i in range(40)]
APP = "tests.chaos.rescale_app:app"
NOTICE_S = 90  # workers notice within ~15 s; then the partitions rebalance twice


def partition_of(key: str, count: int) -> int:
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
            raise AssertionError(f"{exc}; its /health: {health(worker)}") from None

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
            f"{where(k)}: {len(s)} of {sent[k]}, seq {s[:3]}..{s[-1]}"
            for k, s in sorted(keys.items())
        ]
        raise AssertionError(f"{exc}; {len(missing)} missing:\n" + "\n".join(where)) from None
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        await out.poll()
    return out.records


def where(key: str) -> str:
    """A key with its partitions at 4, 8 and 12 partitions (where it moved)."""
    return f"{key} (partition {'/'.join(str(partition_of(key, n)) for n in (4, 8, 12))} of 4/8/12)"


def check_outputs(records: list[Any], sent: dict[str, int], *, duplicates: bool) -> None:
    """Each key's counter continues exactly (every output's count is its input's seq: no
    reset, no gap, processed in order), and so does its history; every input has an
    output, each output partition shows a key's outputs in input order; repeated outputs
    only where ``duplicates``."""
    problems: list[str] = []
    by_key: dict[str, list[tuple[int, int, int]]] = {}
    ids: dict[tuple[str, int], set[str]] = {}
    histories: dict[str, list[list[int]]] = {}  # [the last note's seq, the length]
    for record, (key, value, headers) in zip(records, decoded(records), strict=True):
        by_key.setdefault(key, []).append((record.partition, value["value"], value["count"]))
        histories.setdefault(key, []).append(value["history"])
        ids.setdefault((key, value["value"]), set()).add(headers.get("agentstream-event-id", ""))
    for key, last in sent.items():
        outputs = by_key.get(key, [])
        broken = [(seq, count) for _, seq, count in outputs if seq != count]
        if broken:
            problems.append(f"{where(key)}: counter broke, (seq, count) {broken[:5]}")
        notes = zip(histories.get(key, []), outputs, strict=True)
        torn = [h for h, (_, seq, _) in notes if h != [seq, seq]]
        if torn:
            problems.append(f"{where(key)}: history broke, [last, length] {torn[:5]}")
        seqs = [seq for _, seq, _ in outputs]
        lost = sorted(set(range(1, last + 1)) - set(seqs))
        if lost:
            problems.append(f"{where(key)}: {len(lost)} inputs without an output: {lost[:5]}")
        repeated = sorted({seq for seq in seqs if seqs.count(seq) > 1})
        if repeated and not duplicates:
            same = all(len(ids[key, seq]) == 1 for seq in repeated)
            problems.append(
                f"{where(key)}: duplicate outputs of seq {repeated[:5]} "
                f"({'same event id: replayed' if same else 'DIFFERENT event ids'})"
            )
        elif any(len(ids[key, seq]) > 1 for seq in repeated):  # a repeat is the same output
            problems.append(f"{where(key)}: seq {repeated[:5]} output with different event ids")
        for partition in sorted({p for p, _, _ in outputs}):
            firsts = list(dict.fromkeys(seq for p, seq, _ in outputs if p == partition))
            wrong = next((i for i in range(1, len(firsts)) if firsts[i] < firsts[i - 1]), None)
            if wrong is not None:
                problems.append(
                    f"{where(key)}: out of order on output partition {partition}: "
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


def health(worker: WorkerProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.web_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:  # 503 while recovering: the body still says why
        return dict(json.loads(exc.read()))
    except OSError:
        return {}
