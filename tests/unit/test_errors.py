"""Failures: action errors, serialization and thread checks (issue 2, behaviours 6-7)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentstream import (
    ActionExecutionError,
    Agent,
    ContextThreadError,
    Event,
    InputEvent,
    OutputEvent,
    RunnerContext,
    SerializationError,
    action,
)
from agentstream.runtime.memory import MemoryStore, StoreMemoryObject
from agentstream.serde import dumps, loads, pack_event, unpack_event
from agentstream.testing import InputRecord, LocalRunner


class Breaks(Agent):
    @action(InputEvent)
    def run(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.short_term_memory.set("touched", True)
        if event.input == "bad":
            raise KeyError("no such thing")
        ctx.send_event(OutputEvent(output=event.input))


def test_action_error_carries_context_and_other_keys_finish() -> None:
    runner = LocalRunner(Breaks())
    with pytest.raises(ActionExecutionError) as info:
        runner.run([InputRecord("k1", "bad", id="e-1"), ("k2", "ok"), ("k3", "ok")])
    err = info.value
    assert (err.key, err.action, err.event_id, err.seq) == ("k1", "run", "e-1", 1)
    assert isinstance(err.cause, KeyError)
    assert "no such thing" in str(err) and "'run'" in str(err)
    assert sorted(runner.outputs) == [("k2", "ok"), ("k3", "ok")]
    failures = runner.metrics.registry.get_sample_value(
        "agentstream_action_failures_total", {"action": "run"}
    )
    assert failures == 1
    assert runner.key_state.get("k1") is not None
    assert not (runner.key_state.memory("k1") or {}).get("values"), (
        "a failed action's memory writes must be rolled back"
    )


def test_failed_key_moves_on_to_its_next_input() -> None:
    runner = LocalRunner(Breaks(), error_policy="collect")
    out = runner.run([("k", "bad"), ("k", "good")])
    assert out == [("k", "good")]
    assert [e.key for e in runner.errors] == ["k"]


def test_error_policy_hook_receives_the_error() -> None:
    handled: list[tuple[str, Any]] = []

    async def dead_letter(error: ActionExecutionError, event: Event, record: InputRecord) -> None:
        handled.append((error.action, record.value))

    runner = LocalRunner(Breaks(), error_policy=dead_letter)
    assert runner.run([("k", "bad"), ("k", "fine")]) == [("k", "fine")]
    assert handled == [("run", "bad")]


class Opaque:
    pass


def test_send_event_refuses_unserializable_event_on_the_spot() -> None:
    class Carrier(Event):
        thing: Any

    where: list[str] = []

    class A(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            try:
                ctx.send_event(Carrier(thing=Opaque()))
            except SerializationError as exc:
                where.append(str(exc))
                raise

    with pytest.raises(ActionExecutionError) as info:
        LocalRunner(A()).run([("k", 1)])
    assert isinstance(info.value.cause, SerializationError)
    assert where and "Carrier" in where[0] and "Opaque" in where[0]


def test_memory_refuses_unserializable_values() -> None:
    class A(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.short_term_memory.set("x", Opaque())

    with pytest.raises(ActionExecutionError) as info:
        LocalRunner(A()).run([("k", 1)])
    assert isinstance(info.value.cause, SerializationError)
    assert "'x'" in str(info.value.cause)


@pytest.mark.no_always_replay("it counts errors of each action run; replay runs each twice")
def test_context_and_memory_refused_from_another_thread() -> None:
    errors: list[BaseException] = []

    class A(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            memory = ctx.short_term_memory

            def in_thread() -> None:
                for use in (
                    lambda: ctx.send_event(OutputEvent(output=1)),
                    lambda: memory.set("a", 1),
                    lambda: memory.get("a"),
                ):
                    try:
                        use()
                    except ContextThreadError as exc:
                        errors.append(exc)

            await asyncio.get_running_loop().run_in_executor(None, in_thread)
            ctx.send_event(OutputEvent(output="ok"))

    assert LocalRunner(A()).run([("k", 1)]) == [("k", "ok")]
    assert len(errors) == 3
    assert "another thread" in str(errors[0])


def test_durable_thread_pool_function_cannot_touch_context() -> None:
    class A(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            await ctx.durable_execute_async(lambda: ctx.short_term_memory.set("x", 1))

    with pytest.raises(ActionExecutionError) as info:
        LocalRunner(A()).run([("k", 1)])
    assert isinstance(info.value.cause, ContextThreadError)


def test_context_is_dead_after_the_action() -> None:
    kept: list[RunnerContext] = []

    class A(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            kept.append(ctx)

    LocalRunner(A()).run([("k", 1)])
    with pytest.raises(RuntimeError, match="after the action finished"):
        kept[0].send_event(OutputEvent(output=1))


# -- serialization round-trips ------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class Rich(Event):
    text: str
    count: int
    when: dt.datetime
    tags: list[str]
    extra_map: dict[str, int]


@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_memory_values_round_trip(value: Any) -> None:
    assert loads(dumps(value)) == value
    store = MemoryStore("short")
    obj = StoreMemoryObject(store, "", lambda update: None, lambda: None)
    obj.set("a.b", value)
    again = MemoryStore("short", loads(dumps(store.dump())))
    assert again.values == {"a.b": value} and again.objects == {"a"}


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(),
    count=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    when=st.datetimes(timezones=st.just(dt.UTC)),
    tags=st.lists(st.text(max_size=5), max_size=5),
    extra_map=st.dictionaries(st.text(max_size=5), st.integers(0, 10), max_size=3),
    payload=json_values,
)
def test_events_round_trip(
    text: str,
    count: int,
    when: dt.datetime,
    tags: list[str],
    extra_map: dict[str, int],
    payload: Any,
) -> None:
    event = Rich(
        text=text,
        count=count,
        when=when,
        tags=tags,
        extra_map=extra_map,
        id="e",
        parent_id="p",
        source_timestamp=5,
        undeclared=payload,
    )
    back = unpack_event(pack_event(event))
    assert type(back) is Rich
    assert back == event
    generic = unpack_event(pack_event(InputEvent(input=payload, id="i")))
    assert isinstance(generic, InputEvent) and generic.input == payload
