"""Crash recovery with SIGKILL (issue 3, behaviours 3, 4 and 6)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentstream.service.broker import ensure_topics
from tests.brokers import Broker
from tests.harness import Topic, WorkerProcess, decoded, effects, produce, wait_until

KEYS = [f"key-{i}" for i in range(12)]


@pytest.fixture
def cluster(
    broker: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Callable[[str], WorkerProcess]]:
    """Makes worker processes of tests/e2e_app.py sharing one app id and effects dir."""
    name = unique_name("app")
    env = {
        "E2E_DIR": str(tmp_path),
        "E2E_APP": name,
        "E2E_IN": f"{name}-in",
        "E2E_OUT": f"{name}-out",
    }
    workers: list[WorkerProcess] = []

    def make(label: str) -> WorkerProcess:
        worker = WorkerProcess(
            "tests.e2e_app:app",
            broker.url,
            tmp_path / f"data-{label}",
            env,
            tmp_path / f"worker-{label}.log",
        )
        workers.append(worker)
        return worker.start()

    make.env = env  # type: ignore[attr-defined]
    yield make
    for worker in workers:
        worker.kill()


def _assert_exactly_once_effects(directory: Path, inputs: list[tuple[str, str]]) -> None:
    seen = effects(directory)
    for key, value in inputs:
        for kind in ("call", "first", "second"):
            assert seen[f"{kind} {key} {value}"] == 1, (
                f"{kind} ran {seen[f'{kind} {key} {value}']} times for {key}={value}"
            )


def _assert_outputs(records: list, inputs: list[tuple[str, str]]) -> None:
    outputs = decoded(records)
    by_input: dict[tuple[str, str], set[str]] = {}
    for key, value, headers in outputs:
        by_input.setdefault((key, value["value"]), set()).add(headers["agentstream-event-id"])
    missing = [i for i in inputs if i not in by_input]
    assert not missing, f"lost outputs for {missing}"
    assert all(len(ids) == 1 for ids in by_input.values()), "a duplicate has a different id"
    for key in {k for k, _ in inputs}:
        counts = [v["count"] for k, v, _ in outputs if k == key]
        assert sorted(set(counts)) == list(range(1, len(set(counts)) + 1)), (
            f"short-term memory of {key} lost or applied twice: {counts}"
        )
        values = [v for k, v in inputs if k == key]
        for k, v, _ in outputs:
            if k == key:
                assert v["seen"] == values[: v["count"]], (
                    f"the history of {key} lost or doubled an entry: {v['seen']} at count "
                    f"{v['count']}"
                )


async def test_sigkill_repeatedly_loses_nothing_and_never_reruns_completed_work(
    broker: Broker, tmp_path: Path, cluster: Callable[[str], WorkerProcess]
) -> None:
    """Scenario: every key has one input mid-action (held at a gate after its first action
    and durable call completed) and one input pending; the worker is SIGKILLed, restarted,
    killed again, restarted with an EMPTY data dir, then the gate opens.
    We expect: all outputs arrive; first actions and durable calls ran exactly once;
    the held action ran to completion once; duplicates, if any, share the event id."""
    env = cluster.env  # type: ignore[attr-defined]
    await ensure_topics(broker.bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    batch1 = [(k, "a") for k in KEYS]
    batch2 = [(k, "b") for k in KEYS]
    worker = await cluster("1").ready()
    await produce(broker.bootstrap, env["E2E_IN"], batch1 + batch2)

    def waiting(n: int) -> Callable[[], bool]:
        return lambda: (
            sum(c for line, c in effects(tmp_path).items() if line.startswith("wait ")) >= n
        )

    await wait_until(waiting(len(KEYS)), 30, "every key's first input held mid-action")
    for restart, label in enumerate(["1", "2"], start=1):
        worker.kill()
        # first restart: the killed worker's data dir; second: an empty one
        worker = await cluster(label if restart == 1 else "empty").ready()
        await wait_until(
            waiting(len(KEYS) * (restart + 1)), 30, f"held actions resumed after kill #{restart}"
        )
        replayed = worker.metric("agentstream_actions_replayed_total", action="first")
        assert replayed >= len(KEYS), f"restart #{restart} replayed {replayed} first actions"
    (tmp_path / "gate").touch()
    async with Topic(broker.bootstrap, env["E2E_OUT"]) as out:
        records = await out.wait_for_values(set(batch1 + batch2), 60)
    _assert_outputs(records, batch1 + batch2)
    _assert_exactly_once_effects(tmp_path, batch1 + batch2)


async def test_kill_while_streaming_loses_nothing(
    broker: Broker, tmp_path: Path, cluster: Callable[[str], WorkerProcess]
) -> None:
    """Scenario: a stream flows freely and the worker is killed three times mid-stream.
    We expect: every input's output arrives, duplicates carry the same event id, and
    each durable call whose result was used by an emitted output ran once."""
    env = cluster.env  # type: ignore[attr-defined]
    (tmp_path / "gate").touch()
    await ensure_topics(broker.bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    inputs = [(k, f"v{i}") for i in range(6) for k in KEYS]
    worker = await cluster("a").ready()
    await produce(broker.bootstrap, env["E2E_IN"], inputs)
    async with Topic(broker.bootstrap, env["E2E_OUT"]) as out:
        for kill, target in enumerate((10, 30, 50), start=1):
            await out.wait_for(target, 60, f"outputs before kill #{kill}")
            worker.kill()
            worker = await cluster("a").ready()
        records = await out.wait_for_values(set(inputs), 90, "outputs of every input")
    _assert_outputs(records, inputs)
    seen = effects(tmp_path)
    for key, value in inputs:
        assert seen[f"first {key} {value}"] >= 1


async def test_failover_to_second_worker(
    broker: Broker, tmp_path: Path, cluster: Callable[[str], WorkerProcess]
) -> None:
    """Scenario: two workers split the partitions; one is killed with keys mid-action.
    We expect: the survivor takes its partitions and their state, resumes the held keys
    without re-running completed work, and every output arrives."""
    env = cluster.env  # type: ignore[attr-defined]
    await ensure_topics(broker.bootstrap, {env["E2E_IN"]: 4, env["E2E_OUT"]: 4})
    one = await cluster("one").ready()
    two = await cluster("two").ready()
    inputs = [(k, "x") for k in KEYS]

    async def split() -> bool:
        return (
            one.health() == 200
            and two.health() == 200
            and (one.metric("agentstream_consumer_lag", topic=env["E2E_IN"]) is not None)
        )

    await wait_until(split, 30, "both workers ready")
    await produce(broker.bootstrap, env["E2E_IN"], inputs)
    await wait_until(
        lambda: (
            sum(c for line, c in effects(tmp_path).items() if line.startswith("wait ")) >= len(KEYS)
        ),
        30,
        "every key held mid-action",
    )
    one.kill()
    await wait_until(
        lambda: (
            sum(c for line, c in effects(tmp_path).items() if line.startswith("wait ")) > len(KEYS)
        ),
        30,
        "the survivor to resume the killed worker's keys",
    )
    (tmp_path / "gate").touch()
    async with Topic(broker.bootstrap, env["E2E_OUT"]) as out:
        records = await out.wait_for_values(set(inputs), 60)
    _assert_outputs(records, inputs)
    _assert_exactly_once_effects(tmp_path, inputs)
    assert two.metric("agentstream_actions_replayed_total", action="first") >= 1
