"""Action state, replay-skip and durable calls (issue 2, behaviour 5 and 10)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream import (
    ActionExecutionError,
    Agent,
    DurableExecutionError,
    Event,
    InputEvent,
    NonDeterministicActionError,
    OutputEvent,
    RunnerContext,
    action,
)
from agentstream.runtime import ActionState, CallRecord
from agentstream.testing import InMemoryActionStateStore, InputRecord, LocalRunner


class Asked(Event):
    question: str


class Counting(Agent):
    """Two actions with side effects counted per (action, input)."""

    def __init__(self, calls: dict[str, int]):
        super().__init__()
        self.calls = calls

    @action(InputEvent)
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        calls = ctx.get_resource("calls")
        calls["ask"] = calls.get("ask", 0) + 1
        ctx.short_term_memory.set("last", event.input)
        ctx.send_event(Asked(question=str(event.input)))

    @action(Asked)
    def answer(event: Asked, ctx: RunnerContext) -> None:
        calls = ctx.get_resource("calls")
        calls["answer"] = calls.get("answer", 0) + 1
        ctx.send_event(OutputEvent(output=f"a:{event.question}"))


def counting(calls: dict[str, int]) -> Counting:
    agent = Counting(calls)
    agent.add_resource("calls", calls)
    return agent


def test_action_state_recorded_under_key_seq_action_event_id() -> None:
    store = InMemoryActionStateStore()
    runner = LocalRunner(counting({}), action_state_store=store)
    runner.run([("k", "q1")])
    entries = store.entries()
    assert {(k, s, a) for k, s, a, _ in entries} == {("k", 1, "ask"), ("k", 1, "answer")}
    ask = next(e for e in entries if e[2] == "ask")
    state = store.get(*ask)
    assert state is not None and state.completed
    assert state.memory_updates == (("set", "short", "last", "q1"),)
    assert len(state.sent_events) == 1


def test_rerun_with_same_store_skips_completed_actions() -> None:
    store = InMemoryActionStateStore()
    first: dict[str, int] = {}
    out1 = LocalRunner(counting(first), action_state_store=store).run([("k", "q1"), ("j", "q2")])
    second: dict[str, int] = {}
    runner = LocalRunner(counting(second), action_state_store=store)
    memory_seen: list[Any] = []

    out2 = runner.run([("k", "q1"), ("j", "q2")])
    assert sorted(out2) == sorted(out1)
    assert second == {}, "completed actions ran again"
    assert (
        runner.metrics.registry.get_sample_value(
            "agentstream_actions_replayed_total", {"action": "ask"}
        )
        == 2
    )
    memory = runner.key_state.memory("k")
    assert memory is not None
    memory_seen.append(memory["values"])
    assert memory_seen == [{"last": "q1"}], "replay did not re-apply memory updates"


def test_replayed_output_ids_are_identical() -> None:
    store = InMemoryActionStateStore()
    a = LocalRunner(counting({}), action_state_store=store)
    a.run([("k", "q")])
    b = LocalRunner(counting({}), action_state_store=store)
    b.run([("k", "q")])
    assert [e.id for e in a.output_events] == [e.id for e in b.output_events]


class Flaky(Agent):
    @action(InputEvent)
    async def call(event: InputEvent, ctx: RunnerContext) -> None:
        first = await ctx.durable_execute_async(remote, "first")
        second = ctx.durable_execute(remote_sync, "second")
        if ctx.get_resource("crash")["on"]:
            raise RuntimeError("crash after two durable calls")
        ctx.send_event(OutputEvent(output=[first, second]))


CALLS: dict[str, int] = {}


async def remote(name: str) -> str:
    CALLS[name] = CALLS.get(name, 0) + 1
    await asyncio.sleep(0)
    return f"{name}-result"


def remote_sync(name: str) -> str:
    CALLS[name] = CALLS.get(name, 0) + 1
    return f"{name}-result"


def flaky(calls: dict[str, int], crash: bool) -> Flaky:
    """A Flaky agent; its durable functions count into ``calls`` (the module's CALLS)."""
    CALLS.clear()
    agent = Flaky()
    agent.add_resource("crash", {"on": crash})
    return agent


def test_durable_calls_of_unfinished_action_return_recorded_results() -> None:
    """Scenario: an action makes two durable calls, then fails (a crash mid-action).
    We expect: re-running with the same store serves both calls from the record."""
    store = InMemoryActionStateStore()
    with pytest.raises(ActionExecutionError):
        LocalRunner(flaky(CALLS, crash=True), action_state_store=store).run([("k", 1)])
    assert CALLS == {"first": 1, "second": 1}
    runner = LocalRunner(Flaky().add_resource("crash", {"on": False}), action_state_store=store)
    assert runner.run([("k", 1)]) == [("k", ["first-result", "second-result"])]
    assert CALLS == {"first": 1, "second": 1}, "a recorded durable call ran again"
    assert (
        runner.metrics.registry.get_sample_value(
            "agentstream_durable_calls_replayed_total", {"action": "call"}
        )
        == 2
    )


def test_recorded_exception_is_reraised_as_durable_execution_error() -> None:
    attempts: list[int] = []

    def boom(x: int) -> int:
        attempts.append(x)
        raise ValueError(f"bad {x}")

    class A(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            try:
                ctx.durable_execute(boom, 7)
            except ValueError:
                ctx.send_event(OutputEvent(output="first run: ValueError"))
                raise
            except DurableExecutionError as exc:
                ctx.send_event(OutputEvent(output=[exc.original_type, exc.original_message]))

    store = InMemoryActionStateStore()
    with pytest.raises(ActionExecutionError):
        LocalRunner(A(), action_state_store=store).run([("k", 1)])
    out = LocalRunner(A(), action_state_store=store).run([("k", 1)])
    assert attempts == [7]
    assert out == [("k", ["builtins.ValueError", "bad 7"])]


def test_changed_arguments_run_for_real_and_discard_the_rest() -> None:
    store = InMemoryActionStateStore()
    seen: list[tuple[str, int]] = []

    def f(tag: str, x: int) -> int:
        seen.append((tag, x))
        return x * 10

    def make(args: list[int], crash: bool) -> Agent:
        agent = Agent()

        def run(event: InputEvent, ctx: RunnerContext) -> None:
            results = [ctx.durable_execute(f, "c", x) for x in args]
            if crash:
                raise RuntimeError("crash")
            ctx.send_event(OutputEvent(output=results))

        return agent.add_action("run", [InputEvent], run)

    with pytest.raises(ActionExecutionError):
        LocalRunner(make([1, 2, 3], crash=True), action_state_store=store).run([("k", 0)])
    seen.clear()
    out = LocalRunner(make([1, 5, 3], crash=False), action_state_store=store).run([("k", 0)])
    assert out == [("k", [10, 50, 30])]
    assert seen == [("c", 5), ("c", 3)], "call 1 replays; 2 differs so it and the rest run"


def test_reconciler_decides_a_started_but_unrecorded_call() -> None:
    """Scenario: the record says the call started but has no outcome (died mid-call).
    We expect: the reconciler is asked instead of calling the function again."""
    calls: list[str] = []

    def charge(order: str) -> str:
        calls.append(order)
        return "charged"

    def reconcile(order: str) -> str:
        return f"reconciled {order}"

    class A(Agent):
        @action(InputEvent)
        def pay(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(
                OutputEvent(output=ctx.durable_execute(charge, "o-1", reconciler=reconcile))
            )

    from agentstream.runtime.durable import _digest, fn_id

    store = InMemoryActionStateStore()
    started = CallRecord(fn_id(charge), _digest(("o-1",), {}), "started")
    store.put("k", 1, "pay", "input-0", ActionState(completed=False, calls=(started,)))
    out = LocalRunner(A(), action_state_store=store).run([("k", None)])
    assert out == [("k", "reconciled o-1")]
    assert calls == []
    # Without a record, the call runs and its outcome replaces the "started" mark.
    fresh = InMemoryActionStateStore()
    LocalRunner(A(), action_state_store=fresh).run([("k", None)])
    state = fresh.get("k", 1, "pay", "input-0")
    assert state is not None and [c.status for c in state.calls] == ["ok"]
    assert calls == ["o-1"]


def test_finished_inputs_are_pruned_never_in_flight_ones() -> None:
    gate = asyncio.Event()

    class A(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            if event.input == "wait":
                await gate.wait()
            ctx.send_event(OutputEvent(output=event.input))

    async def scenario() -> None:
        store = InMemoryActionStateStore()
        runner = LocalRunner(A(), action_state_store=store)
        op = runner.operator
        op.on_input(InputRecord("a", "fast", "i0"))
        op.on_input(InputRecord("b", "wait", "i1"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert op.finished_inputs() == [("a", 1)]
        op.prune()
        assert [e[0] for e in store.entries()] == [], "b's action has not completed yet"
        gate.set()
        await op.drain()
        assert [e[0] for e in store.entries()] == ["b"]
        op.prune()
        assert len(store) == 0

    asyncio.run(scenario())


def test_always_replay_passes_for_deterministic_agents() -> None:
    runner = LocalRunner(flaky(CALLS, crash=False), always_replay=True)
    assert runner.run([("k", 1)]) == [("k", ["first-result", "second-result"])]
    assert CALLS == {"first": 1, "second": 1}, "always-replay re-ran durable calls"
    out = LocalRunner(counting({}), always_replay=True).run([("k", "a"), ("k", "b")])
    assert out == [("k", "a:a"), ("k", "a:b")]


def test_always_replay_reports_non_deterministic_actions() -> None:
    counter = iter(range(100))

    class Random(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(OutputEvent(output=next(counter)))

    with pytest.raises(NonDeterministicActionError) as info:
        LocalRunner(Random(), always_replay=True).run([("k", 1)])
    assert info.value.action == "run" and "sent" in info.value.detail


def test_durable_call_arguments_are_not_consumed() -> None:
    """An iterator argument is digested by its repr, never iterated by the runtime."""
    import itertools

    class A(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(OutputEvent(output=ctx.durable_execute(next, itertools.count(5))))

    assert LocalRunner(A()).run([("k", 1)]) == [("k", 5)]
