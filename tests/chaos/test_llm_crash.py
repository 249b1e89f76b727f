"""The toolkit under SIGKILL (issue 14, behaviour 1): completed model and tool calls are
never made again, the loop goes on, and the output is the one a run without a crash gives."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentstream.service.broker import ensure_topics
from agentstream.testing import ScriptedChatServer, ScriptedReply, ScriptedRequest
from tests.brokers import Broker
from tests.harness import Topic, WorkerProcess, decoded, effects, produce, wait_until

ORDERS = [f"A-{i}" for i in range(6)]


class RefundScript:
    """Each conversation: look the order up, then (held at the gate) refund it, then answer.
    Counts the requests per (order, step) as the server receives them."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: Counter[tuple[str, int]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, request: ScriptedRequest) -> ScriptedReply:
        order = next(m["content"] for m in request.messages if m["role"] == "user")
        step = sum(1 for m in request.messages if m["role"] == "tool")
        with self.lock:
            self.seen[(order, step)] += 1
        if step == 0:
            return ScriptedReply.tools(("lookup_order", {"order_id": order}))
        if step == 1:
            return ScriptedReply.tools(("issue_refund", {"order_id": order}), hold=self.gate)
        return ScriptedReply.text(f"{request.tool_results[-1]}; it had shipped")

    def count(self, step: int) -> int:
        with self.lock:
            return sum(n for (_, s), n in self.seen.items() if s == step)


@pytest.fixture
def script() -> Iterator[tuple[ScriptedChatServer, RefundScript]]:
    refunds = RefundScript()
    with ScriptedChatServer(responder=refunds) as server:
        yield server, refunds
        refunds.gate.set()


async def test_sigkill_mid_react_loop_never_repeats_completed_calls(
    broker: Broker,
    tmp_path: Path,
    unique_name: Callable[[str], str],
    script: tuple[ScriptedChatServer, RefundScript],
) -> None:
    """Scenario: six keys each run a ReAct loop (model -> lookup tool -> model -> refund
    tool -> model); every key's second model call is held at the server when the worker is
    SIGKILLed; a new worker on an EMPTY data dir (state from the changelog) takes over, then
    the held replies are released.
    We expect: each key's first model call and its lookup were not made again, the
    interrupted second call was sent once more, the refund (a side effect) ran once, and
    every key's output is the answer of an uninterrupted run."""
    server, refunds = script
    name = unique_name("llm")
    env = {"LLM_DIR": str(tmp_path), "LLM_APP": name, "LLM_BASE_URL": server.openai_url}
    workers: list[WorkerProcess] = []

    def worker(label: str) -> WorkerProcess:
        started = WorkerProcess(
            "tests.chaos.llm_app:app",
            broker.url,
            tmp_path / f"data-{label}",
            env,
            tmp_path / f"worker-{label}.log",
        ).start()
        workers.append(started)
        return started

    try:
        await ensure_topics(broker.bootstrap, {f"{name}-in": 4, f"{name}-out": 4})
        first = await worker("1").ready(60)
        await produce(broker.bootstrap, f"{name}-in", [(order, order) for order in ORDERS])
        await wait_until(
            lambda: refunds.count(1) >= len(ORDERS), 60, "every key's second model call held"
        )
        assert refunds.count(2) == 0
        first.kill()

        second = await worker("empty").ready(60)
        await wait_until(
            lambda: refunds.count(1) >= 2 * len(ORDERS), 60, "the interrupted calls sent again"
        )
        refunds.gate.set()
        wanted = {(order, f"refunded {order}; it had shipped") for order in ORDERS}
        async with Topic(broker.bootstrap, f"{name}-out") as out:

            async def complete() -> bool:
                return wanted <= {(k, v) for k, v, _ in decoded(await out.poll())}

            await wait_until(complete, 60, f"the outputs of {len(ORDERS)} keys")
            outputs = decoded(out.records)
    finally:
        for running in workers:
            running.kill()

    assert {(k, v) for k, v, _ in outputs} == wanted
    for order in ORDERS:
        assert refunds.seen[(order, 0)] == 1, f"{order}: the completed first call was re-sent"
        assert refunds.seen[(order, 1)] == 2, (
            f"{order}: the interrupted call ran {refunds.seen[(order, 1)]} times"
        )
        assert refunds.seen[(order, 2)] == 1
    seen = effects(tmp_path)
    for order in ORDERS:
        assert seen[f"lookup {order}"] == 1, (
            f"lookup of {order} ran {seen[f'lookup {order}']} times"
        )
        assert seen[f"refund {order}"] == 1, (
            f"refund of {order} ran {seen[f'refund {order}']} times"
        )
    assert server.count("chat") == 4 * len(ORDERS)
    assert second.proc is not None


async def test_long_term_memory_survives_sigkill_and_an_empty_data_dir(
    broker: Broker, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    """Scenario: two keys add long-term memory items; the worker is SIGKILLed and replaced
    by one on an EMPTY data dir; then each key searches.
    We expect: each key finds exactly its own items (from the changelog), best match first."""
    name = unique_name("ltm")
    with ScriptedChatServer() as server:
        env = {"LLM_DIR": str(tmp_path), "LLM_APP": name, "LLM_BASE_URL": server.openai_url}
        topic_in, topic_out = f"{name}-notes-in", f"{name}-notes-out"
        workers: list[WorkerProcess] = []

        def worker(label: str) -> WorkerProcess:
            started = WorkerProcess(
                "tests.chaos.llm_app:memory_app",
                broker.url,
                tmp_path / f"data-{label}",
                env,
                tmp_path / f"worker-{label}.log",
            ).start()
            workers.append(started)
            return started

        try:
            await ensure_topics(broker.bootstrap, {topic_in: 4, topic_out: 4})
            first = await worker("1").ready(60)
            adds = [
                ("ann", {"add": "ann drinks green tea"}),
                ("ann", {"add": "ann lives by the sea"}),
                ("bob", {"add": "bob drinks black coffee"}),
            ]
            await produce(broker.bootstrap, topic_in, adds)
            async with Topic(broker.bootstrap, topic_out) as out:
                await out.wait_for(3, 60, "the adds' outputs")
            first.kill()
            await worker("empty").ready(60)
            await produce(
                broker.bootstrap,
                topic_in,
                [("ann", {"search": "what tea does ann drink"}), ("bob", {"search": "tea"})],
            )
            async with Topic(broker.bootstrap, topic_out) as out:

                async def searched() -> bool:
                    return sum("found" in v for _, v, _ in decoded(await out.poll())) >= 2

                await wait_until(searched, 60, "both searches' outputs")
                found = {k: v["found"] for k, v, _ in decoded(out.records) if "found" in v}
        finally:
            for running in workers:
                running.kill()
    assert found == {
        "ann": ["ann drinks green tea", "ann lives by the sea"],
        "bob": ["bob drinks black coffee"],
    }
