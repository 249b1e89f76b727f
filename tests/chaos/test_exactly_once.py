"""processing_guarantee=exactly_once on a real Kafka (issue 12, 2): worker processes
SIGKILLed and paused past their session while a read_committed consumer watches the output.

The agent (tests/chaos/eos_app.py) makes a durable call per input that returns a fresh
nonce, keeps a per-key count in short-term memory and hops once through the internal
topic before its output: a duplicate, a lost output, a count applied twice and a
completed call run again are all visible.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.service.broker import ensure_topics
from tests.brokers import Broker
from tests.harness import Topic, WorkerProcess, decoded, produce, wait_until

KEYS = [f"key-{i:02d}" for i in range(40)]
INPUTS = [(k, f"v{i}") for i in range(10) for k in KEYS]  # 400 inputs, 10 per key
GRACE_S = 1.5  # a call ends, its result is durable within this (unless killed meanwhile)


class Cluster:
    """Worker processes of tests/chaos/eos_app.py sharing one app id and effects dir."""

    def __init__(self, bootstrap: str, directory: Path, name: str, guarantee: str):
        self.bootstrap = bootstrap
        self.directory = directory
        self.env = {
            "E2E_DIR": str(directory),
            "E2E_APP": name,
            "E2E_IN": f"{name}-in",
            "E2E_OUT": f"{name}-out",
            "AGENTSTREAM_PROCESSING_GUARANTEE": guarantee,
        }
        self.workers: list[WorkerProcess] = []
        self.kills: list[float] = []  # wall times of SIGKILLs and SIGSTOPs

    def start(self, label: str, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            "tests.chaos.eos_app:app",
            f"kafka://{self.bootstrap}",
            self.directory / f"data-{label}",
            {**self.env, **env},
            self.directory / f"worker-{label}.log",
        )
        self.workers.append(worker)
        return worker.start()

    def kill(self, worker: WorkerProcess) -> None:
        self.kills.append(time.time())
        worker.kill()


@pytest.fixture
def eos(real_kafka: Broker, tmp_path: Path, unique_name: Callable[[str], str]) -> Iterator[Cluster]:
    cluster = Cluster(real_kafka.bootstrap, tmp_path, unique_name("eos"), "exactly_once")
    yield cluster
    for worker in cluster.workers:
        worker.kill()


async def _drain(out: Topic, seconds: float = 1.5) -> list[Any]:
    """Read on for a while: a duplicate would arrive after the last first copy."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await out.poll()
    return out.records


def _calls(directory: Path) -> dict[tuple[str, str], list[tuple[str, float, float]]]:
    calls: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    for line in (directory / "effects").read_text().splitlines():
        _, key, value, nonce, started, ended = line.split()
        calls.setdefault((key, value), []).append((nonce, float(started), float(ended)))
    return calls


def assert_exactly_once(
    records: list[Any],
    inputs: list[tuple[str, str]],
    directory: Path,
    kills: list[float],
    zombie_from: float | None = None,
) -> None:
    """Every input's output once, each key's count 1..n in order, and every durable call
    that ran more than once was cut short by a kill (never one that had completed).

    ``zombie_from``: when a paused worker was resumed; calls it starts in the next
    seconds, before it learns that its partitions moved, may repeat completed ones (the
    documented limit: action state is not fenced), but their outputs never commit."""
    outputs = decoded(records)
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, value, _ in outputs:
        seen.setdefault((key, value["value"]), []).append(value)
    lost = [i for i in inputs if i not in seen]
    duplicated = {i: len(v) for i, v in seen.items() if len(v) > 1}
    assert not lost, f"{len(lost)} outputs lost: {lost[:5]}"
    assert not duplicated, f"{len(duplicated)} outputs duplicated: {list(duplicated.items())[:5]}"
    for key in {k for k, _ in inputs}:
        counts = [v["count"] for k, v, _ in outputs if k == key]
        assert counts == list(range(1, len(counts) + 1)), f"memory of {key}: {counts}"
    calls = _calls(directory)
    for item in inputs:
        (output,) = seen[item]
        nonces = [nonce for nonce, _, _ in calls[item]]
        assert output["nonce"] in nonces, f"{item}: output of a call that never ran"
        if zombie_from is not None and any(
            zombie_from <= started <= zombie_from + 10 for _, started, _ in calls[item]
        ):
            continue  # the zombie repeated a call (which one's result is used varies)
        for nonce, started, ended in calls[item]:
            if nonce != output["nonce"]:
                assert any(started <= t <= ended + GRACE_S for t in kills), (
                    f"{item}: a completed durable call ran again ({calls[item]}, kills {kills})"
                )


async def test_sigkill_three_times_mid_stream_exactly_once(eos: Cluster) -> None:
    """Scenario: 400 inputs on 40 keys (a durable call, a memory update and a hop through
    the internal topic each) stream through one exactly-once worker, which is SIGKILLed
    three times mid-stream and restarted on its data dir.
    We expect: a read_committed consumer of the output topic sees every input's output
    exactly once (0 lost, 0 duplicates), each key's count goes 1..10, and no durable call
    that had completed ran again."""
    env = eos.env
    bootstrap = eos.bootstrap
    await ensure_topics(bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    worker = await eos.start("a").ready()
    await produce(bootstrap, env["E2E_IN"], INPUTS)
    async with Topic(bootstrap, env["E2E_OUT"], "read_committed") as out:
        for kill, target in enumerate((60, 160, 260), start=1):
            await out.wait_for(target, 60, f"outputs before kill #{kill}")
            eos.kill(worker)
            worker = await eos.start("a").ready()
        await out.wait_for_values(set(INPUTS), 90, "outputs of every input")
        records = await _drain(out)
    assert_exactly_once(records, INPUTS, eos.directory, eos.kills)
    assert worker.metric("agentstream_dead_letters_total") == 0


async def test_zombie_paused_past_its_session_cannot_commit(eos: Cluster) -> None:
    """Scenario: two exactly-once workers share the partitions; one is SIGSTOPped with
    inputs in flight and stays stopped past its session timeout, so its partitions move
    to the other; more inputs arrive; then the paused one is SIGCONTinued (a zombie that
    still thinks it owns its partitions, its transactions open).
    We expect: the zombie is fenced, a read_committed consumer sees every input's output
    exactly once (0 lost, 0 duplicates), each key's count in order; only calls the zombie
    starts right after it resumes may repeat completed ones (action state is not fenced)."""
    env = eos.env
    bootstrap = eos.bootstrap
    await ensure_topics(bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    one = await eos.start("one").ready()
    two = await eos.start("two").ready()

    def owns_input(worker: WorkerProcess) -> bool:  # it has a lag of an input partition
        return f'topic="{env["E2E_IN"]}"' in worker.metrics()

    await wait_until(lambda: owns_input(one) and owns_input(two), 30, "partitions split")
    first, second = INPUTS[:200], INPUTS[200:]
    await produce(bootstrap, env["E2E_IN"], first)
    async with Topic(bootstrap, env["E2E_OUT"], "read_committed") as out:
        await out.wait_for(40, 60, "outputs before the pause")
        assert one.proc is not None
        eos.kills.append(time.time())  # its in-flight calls may run again elsewhere
        os.kill(one.proc.pid, signal.SIGSTOP)
        try:
            await out.wait_for_values(set(first), 90, "the first half, after the takeover")
            await produce(bootstrap, env["E2E_IN"], second)
        finally:
            resumed = time.time()
            os.kill(one.proc.pid, signal.SIGCONT)
        await out.wait_for_values(set(INPUTS), 90, "outputs of every input")
        records = await _drain(out, 3.0)
    assert_exactly_once(records, INPUTS, eos.directory, eos.kills, zombie_from=resumed)


async def test_outputs_committed_before_a_crash_are_not_sent_again(eos: Cluster) -> None:
    """Scenario: each of 8 keys gets an input whose first action emits an output and routes
    an event to a second action, held at a gate; the first output and the routed event
    commit (the second action is waiting, so the input is still in flight); the worker is
    SIGKILLed and restarted; its resumed inputs replay the first action, which re-sends
    its output; then the gate opens.
    We expect: a read_committed consumer sees each input's first output once (the replay's
    copy is skipped: the committed state records it as sent) and its second output once."""
    env = eos.env
    keys = KEYS[:8]
    await ensure_topics(eos.bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    worker = await eos.start("a", E2E_AGENT="two-outputs").ready()
    await produce(eos.bootstrap, env["E2E_IN"], [(k, "x") for k in keys])

    def waiting(n: int) -> Callable[[], bool]:
        def check() -> bool:
            path = eos.directory / "effects"
            lines = path.read_text().splitlines() if path.exists() else []
            return sum(line.startswith("wait ") for line in lines) >= n

        return check

    async with Topic(eos.bootstrap, env["E2E_OUT"], "read_committed") as out:
        await wait_until(waiting(len(keys)), 60, "every key's second action held")
        await out.wait_for(len(keys), 30, "the first outputs, committed")
        eos.kill(worker)
        worker = await eos.start("a", E2E_AGENT="two-outputs").ready()
        await wait_until(waiting(2 * len(keys)), 60, "the resumed inputs held again")
        (eos.directory / "gate").touch()
        await out.wait_for(2 * len(keys), 60, "the second outputs")
        records = await _drain(out)
    parts = [(k, v["part"]) for k, v, _ in decoded(records)]
    assert sorted(parts) == sorted((k, part) for k in keys for part in (1, 2)), parts
    assert worker.metric("agentstream_actions_replayed_total", action="first") >= len(keys)


async def _stream_through_leader_loss(
    cluster_bootstrap: str, directory: Path, name: str, guarantee: str, kill_leader: Any
) -> tuple[list[Any], WorkerProcess, list[float]]:
    group = Cluster(cluster_bootstrap, directory, name, guarantee)
    env = group.env
    await ensure_topics(
        cluster_bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4}, replication_factor=3
    )
    worker = await group.start("a", AGENTSTREAM_REPLICATION_FACTOR="3").ready(60)
    try:
        await produce(cluster_bootstrap, env["E2E_IN"], INPUTS[:200])
        isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
        async with Topic(cluster_bootstrap, env["E2E_OUT"], isolation) as out:
            await out.wait_for(40, 60, "outputs before the broker is killed")
            await kill_leader(env["E2E_IN"])
            await produce(cluster_bootstrap, env["E2E_IN"], INPUTS[200:])
            await out.wait_for_values(set(INPUTS), 120, "outputs of every input")
            records = await _drain(out)
        assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
        return records, worker, group.kills
    finally:
        worker.kill()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_leader_broker_killed_mid_stream(
    kafka_cluster: Any, tmp_path: Path, unique_name: Callable[[str], str], guarantee: str
) -> None:
    """Scenario: 3 brokers (replication factor 3, min.insync.replicas 2, acks=all); a
    worker streams 400 inputs; the leader of input partition 0 is SIGKILLed mid-stream
    (and restarted at the end).
    We expect: the same worker process carries on (no restart) and loses nothing; under
    exactly_once a read_committed consumer also sees no duplicate."""
    from tests.chaos.test_kafka_cluster import _partition  # the leader of partition 0

    killed: list[int] = []

    async def kill_leader(topic: str) -> None:
        leader = (await _partition(kafka_cluster.bootstrap, topic))["leader"]
        kafka_cluster.kill(leader)
        killed.append(leader)

    try:
        records, _, kills = await _stream_through_leader_loss(
            kafka_cluster.bootstrap, tmp_path, unique_name("lead"), guarantee, kill_leader
        )
    finally:
        for node in killed:
            kafka_cluster.restart(node)
    if guarantee == "exactly_once":
        assert_exactly_once(records, INPUTS, tmp_path, kills)
    else:
        outputs = {(k, v["value"]) for k, v, _ in decoded(records)}
        assert set(INPUTS) <= outputs


def test_eos_app_is_importable() -> None:
    """The chaos app loads (a syntax slip would otherwise show as a worker that never starts)."""
    from tests.chaos import eos_app

    assert eos_app.app.name
