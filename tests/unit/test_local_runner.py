"""The in-process runtime: ordering, concurrency, recursion, memory (issue 2, 1-4)."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.testing import InputRecord, LocalRunner


class Greeting(Event):
    text: str


class Greeter(Agent):
    @action(InputEvent)
    async def start(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Greeting(text=f"hello {event.input}"))

    @action(Greeting)
    def finish(event: Greeting, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.text))


def test_readme_example() -> None:
    outputs = LocalRunner(Greeter()).run([("k1", "ann"), ("k2", "bob")])
    assert sorted(outputs) == [("k1", "hello ann"), ("k2", "hello bob")]


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_same_key_strictly_in_order_one_at_a_time() -> None:
    """Scenario: three inputs of one key whose action sends a follow-up event after a delay.
    We expect: each input fully done (its follow-up processed) before the next starts."""
    trace: list[str] = []

    class Step(Event):
        n: int

    class Slow(Agent):
        @action(InputEvent)
        async def first(event: InputEvent, ctx: RunnerContext) -> None:
            trace.append(f"start {event.input}")
            await asyncio.sleep(0.01 * (3 - event.input))
            ctx.send_event(Step(n=event.input))

        @action(Step)
        async def second(event: Step, ctx: RunnerContext) -> None:
            await asyncio.sleep(0.005)
            trace.append(f"end {event.n}")
            ctx.send_event(OutputEvent(output=event.n))

    outputs = LocalRunner(Slow()).run([("k", 0), ("k", 1), ("k", 2)])
    assert outputs == [("k", 0), ("k", 1), ("k", 2)]
    assert trace == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]


def test_later_input_waits_in_pending_queue() -> None:
    class Gate(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            await asyncio.sleep(0.02)
            ctx.send_event(OutputEvent(output=event.input))

    async def scenario() -> None:
        runner = LocalRunner(Gate())
        op = runner.operator
        op.on_input(InputRecord("k", "a", "i1"))
        op.on_input(InputRecord("k", "b", "i2"))
        record = runner.key_state.get("k")
        assert record is not None and record.current is not None
        assert record.current.value == "a" and [p.value for p in record.pending] == ["b"]
        pending = runner.metrics.registry.get_sample_value
        assert pending("agentstream_pending_inputs") == 1
        await op.drain()
        assert runner.outputs == [("k", "a"), ("k", "b")]
        final = runner.key_state.get("k")
        assert final is not None and final.current is None and final.pending == []
        assert final.seq == 2
        assert pending("agentstream_pending_inputs") == 0

    asyncio.run(scenario())


def test_different_keys_run_concurrently() -> None:
    class Waiter(Agent):
        @action(InputEvent)
        async def wait(event: InputEvent, ctx: RunnerContext) -> None:
            await asyncio.sleep(0.2)
            ctx.send_event(OutputEvent(output=event.input))

    started = time.perf_counter()
    outputs = LocalRunner(Waiter()).run([(f"k{i}", i) for i in range(50)])
    elapsed = time.perf_counter() - started
    assert len(outputs) == 50
    assert elapsed < 2.0, f"50 keys x 0.2 s took {elapsed:.2f} s: keys are not concurrent"


def test_max_concurrency_limits_keys_in_flight() -> None:
    running = 0
    peak = 0

    class Waiter(Agent):
        @action(InputEvent)
        async def wait(event: InputEvent, ctx: RunnerContext) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    LocalRunner(Waiter(), max_concurrency=3).run([(f"k{i}", i) for i in range(12)])
    assert peak == 3


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_keys_waiting_for_the_cap_run_first_come_first_served_without_recursion() -> None:
    """Scenario: a cap of 1; the first key waits (async), then 5,000 keys with sync actions
    queue behind it, and a key sends a second input while in line.
    We expect: every input runs, keys in the order they queued (each key's inputs in
    order), and handing the freed permit down a line of 5,000 keys does not recurse."""
    order: list[tuple[str, int]] = []

    class Mixed(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            if event.input == "first":
                await asyncio.sleep(0.01)
            order.append((ctx.key, event.input))
            ctx.send_event(OutputEvent(output=event.input))

    keys = [f"k{i}" for i in range(5000)]
    inputs = [("a", "first"), *[(k, 0) for k in keys], ("k1", 1)]
    outputs = LocalRunner(Mixed(), max_concurrency=1).run(inputs)
    assert len(outputs) == len(inputs)
    assert order[0] == ("a", "first")
    assert [k for k, _ in order[1:5001]] == keys
    assert order[-1] == ("k1", 1)


def test_recursive_events_and_source_timestamp() -> None:
    """Events recurse until OutputEvents; outputs carry the input's source timestamp."""

    class Hop(Event):
        left: int

    class Chain(Agent):
        @action(InputEvent)
        def begin(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(Hop(left=3))
            ctx.send_event(OutputEvent(output="early"))

        @action(Hop)
        def hop(event: Hop, ctx: RunnerContext) -> None:
            if event.left:
                ctx.send_event(Hop(left=event.left - 1))
            else:
                ctx.send_event(OutputEvent(output="done"))

    runner = LocalRunner(Chain())
    outputs = runner.run([InputRecord("k", None, id="src-1", timestamp=1234)])
    assert outputs == [("k", "early"), ("k", "done")]
    assert [e.source_timestamp for e in runner.output_events] == [1234, 1234]
    assert all(e.id and e.parent_id for e in runner.output_events)


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_sent_events_processed_only_after_the_action_finished() -> None:
    trace: list[str] = []

    class Ping(Event):
        pass

    class Agent1(Agent):
        @action(InputEvent)
        async def send(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(Ping())
            await asyncio.sleep(0.01)
            trace.append("send finished")

        @action(Ping)
        def receive(event: Ping, ctx: RunnerContext) -> None:
            trace.append("ping processed")

    LocalRunner(Agent1()).run([("k", 1)])
    assert trace == ["send finished", "ping processed"]


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_one_type_several_actions_in_declaration_order_and_multi_type_action() -> None:
    trace: list[str] = []

    class A(Event):
        pass

    class B(Event):
        pass

    class Fan(Agent):
        @action(InputEvent)
        def first(event: InputEvent, ctx: RunnerContext) -> None:
            trace.append("first")
            ctx.send_event(A())
            ctx.send_event(B())

        @action(InputEvent)
        def second(event: InputEvent, ctx: RunnerContext) -> None:
            trace.append("second")

        @action(A, B)
        def either(event: Event, ctx: RunnerContext) -> None:
            trace.append(type(event).__name__)

    agent = Fan()
    agent.add_action("third", [InputEvent], lambda event, ctx: trace.append("third"))
    LocalRunner(agent).run([("k", 1)])
    assert trace == ["first", "second", "third", "A", "B"]


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_seq_short_term_persists_sensory_cleared() -> None:
    seen: list[tuple[int, int, object]] = []

    class Counter(Agent):
        @action(InputEvent)
        def count(event: InputEvent, ctx: RunnerContext) -> None:
            n = (ctx.short_term_memory.get("stats.count") or 0) + 1
            ctx.short_term_memory.set("stats.count", n)
            seen.append((ctx.seq, n, ctx.sensory_memory.get("scratch")))
            ctx.sensory_memory.set("scratch", event.input)
            ctx.send_event(OutputEvent(output=n))

    runner = LocalRunner(Counter())
    outputs = runner.run([("a", "x"), ("a", "y"), ("b", "z"), ("a", "w")])
    assert sorted(outputs) == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert sorted(seen) == [(1, 1, None), (1, 1, None), (2, 2, None), (3, 3, None)]


def test_memory_objects_nested_paths() -> None:
    result: dict[str, object] = {}

    class Mem(Agent):
        @action(InputEvent)
        def use(event: InputEvent, ctx: RunnerContext) -> None:
            mem = ctx.short_term_memory
            user = mem.new_object("user")
            user.set("name", "ann")
            mem.set("user.profile.age", 41)
            result["name"] = mem.get("user.name")
            result["age"] = mem.get("user").get("profile.age")
            result["fields"] = sorted(mem.get("user").get_field_names())
            result["exists"] = (mem.is_exist("user.profile"), mem.is_exist("nope"))
            result["missing"] = mem.get("user.nothing")

    LocalRunner(Mem()).run([("k", 1)])
    assert result == {
        "name": "ann",
        "age": 41,
        "fields": ["name", "profile"],
        "exists": (True, False),
        "missing": None,
    }


@pytest.mark.no_always_replay("it logs each action run; the replay check runs each twice")
def test_resources_and_action_config() -> None:
    got: list[object] = []

    class Res(Agent):
        @action(InputEvent, config={"model": "small"})
        def use(event: InputEvent, ctx: RunnerContext) -> None:
            got.append((ctx.get_resource("client"), ctx.action_config["model"]))

    agent = Res().add_resource("client", lambda: "made-once", lazy=True)
    LocalRunner(agent).run([("k", 1), ("k", 2)])
    assert got == [("made-once", "small"), ("made-once", "small")]


@pytest.mark.parametrize("bad", [lambda: None, 42])
def test_action_definitions_are_checked(bad: object) -> None:
    from agentstream import ConfigurationError

    with pytest.raises(ConfigurationError):
        Agent().add_action("x", [InputEvent], bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Agent().add_action("y", [OutputEvent], lambda e, c: None)
