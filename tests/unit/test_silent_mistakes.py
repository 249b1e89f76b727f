"""Mistakes that used to pass silently now say so (issue 16, items 1-5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream import (
    Agent,
    ConfigurationError,
    Event,
    InputEvent,
    OutputEvent,
    RunnerContext,
    SerializationError,
    action,
)
from agentstream.errors import UnhandledEventError
from agentstream.testing import LocalRunner


class Greeting(Event):
    text: str


class Twin:
    """Holds a second event class named ``Greeting`` (a typo'd twin of the real one)."""

    class Greeting(Event):
        text: str


class SendsTwin(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "typo":
            ctx.send_event(Twin.Greeting(text="lost"))
        else:
            ctx.send_event(Greeting(text=str(event.input)))

    @action(Greeting)
    def finish(event: Greeting, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.text))


def _unhandled(runner: LocalRunner, type_name: str) -> float | None:
    return runner.metrics.registry.get_sample_value(
        "agentstream_unhandled_events_total", {"event_type": type_name}
    )


def test_an_event_nobody_listens_to_warns_once_per_type(caplog: pytest.LogCaptureFixture) -> None:
    """Scenario: an action sends an event of a twin class that no action listens to, on
    two inputs. We expect: the other inputs are unaffected, one warning naming the type,
    the sending action and the class it was probably meant to be, and the metric counting
    both events."""
    runner = LocalRunner(SendsTwin())
    with caplog.at_level(logging.WARNING, logger="agentstream"):
        outputs = runner.run([("k", "typo"), ("k", "ok"), ("j", "typo")])
    assert outputs == [("k", "ok")]
    twin = Twin.Greeting.type_name()
    warnings = [r.getMessage() for r in caplog.records if "triggers no action" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert twin in warnings[0] and "'start'" in warnings[0]
    assert f"did you mean {Greeting.type_name()}" in warnings[0]
    assert _unhandled(runner, twin) == 2


def test_strict_runner_fails_the_input_on_an_event_nobody_listens_to() -> None:
    """Scenario: the same agent under ``LocalRunner(strict=True)``. We expect: the input
    that sent the twin event fails with UnhandledEventError naming the type and the
    action; other inputs finish."""
    runner = LocalRunner(SendsTwin(), strict=True, error_policy="collect")
    assert runner.run([("k", "typo"), ("j", "ok")]) == [("j", "ok")]
    (error,) = runner.errors
    assert isinstance(error, UnhandledEventError)
    assert error.event_type == Twin.Greeting.type_name() and error.action == "start"
    assert error.key == "k" and "did you mean" in str(error)

    with pytest.raises(UnhandledEventError):
        LocalRunner(SendsTwin(), strict=True).run([("k", "typo")])


def test_strict_runner_refuses_an_agent_without_an_input_action() -> None:
    """Scenario: an agent whose actions never see InputEvent. We expect: a strict runner
    refuses it when built, naming the fix."""

    class Deaf(Agent):
        @action(Greeting)
        def finish(event: Greeting, ctx: RunnerContext) -> None:
            ctx.send_event(OutputEvent(output=event.text))

    with pytest.raises(ConfigurationError, match=r"@action\(InputEvent\)"):
        LocalRunner(Deaf(), strict=True)


class Returns(Agent):
    @action(InputEvent)
    async def start(event: InputEvent, ctx: RunnerContext) -> Any:
        if event.input == "await first":
            await asyncio.sleep(0)
        if event.input == "value":
            return 42
        if event.input == "none":
            ctx.send_event(OutputEvent(output="fine"))
            return None
        return OutputEvent(output="returned, not sent")


class ReturnsSync(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> Any:
        return OutputEvent(output="returned, not sent")


@pytest.mark.parametrize("value", ["inline", "await first", "value"])
def test_an_action_that_returns_a_value_fails_naming_it(value: str) -> None:
    """Scenario: an action returns an event (instead of sending it) or another value,
    before or after it first waits. We expect: the action fails with a TypeError naming
    the action and saying to use ctx.send_event; nothing is output."""
    runner = LocalRunner(Returns(), error_policy="collect")
    assert runner.run([("k", value), ("j", "none")]) == [("j", "fine")]
    (error,) = runner.errors
    assert isinstance(error.cause, TypeError)
    message = str(error.cause)
    assert "action 'start' returned" in message and "ctx.send_event" in message
    if value != "value":
        assert "OutputEvent" in message and "instead of returning it" in message

    sync = LocalRunner(ReturnsSync(), error_policy="collect")
    assert sync.run([("k", 1)]) == []
    assert "action 'start' returned OutputEvent" in str(sync.errors[0].cause)


calls: list[str] = []


def record_call(what: str) -> str:
    calls.append(what)
    return what


async def fetch(what: str) -> str:
    calls.append(what)
    return what


class ForgetsAwait(Agent):
    @action(InputEvent)
    async def start(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.durable_execute_async(fetch, event.input)  # not awaited
        ctx.send_event(OutputEvent(output="done"))


class ForgetsAwaitSync(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.durable_execute_async(record_call, event.input)
        ctx.send_event(OutputEvent(output="done"))


def test_an_unawaited_durable_call_fails_the_action() -> None:
    """Scenario: an action calls ctx.durable_execute_async without awaiting it (in an
    async and in a sync action). We expect: the action fails with a message saying to
    await it (or to use durable_execute in a def action), nothing is output, the function
    never ran, and no "coroutine was never awaited" warning escapes."""
    calls.clear()
    runner = LocalRunner(ForgetsAwait(), error_policy="collect")
    assert runner.run([("k", "a")]) == []
    message = str(runner.errors[0].cause)
    assert "without awaiting" in message and "fetch" in message
    assert "await ctx.durable_execute_async" in message

    sync = LocalRunner(ForgetsAwaitSync(), error_policy="collect")
    assert sync.run([("k", "b")]) == []
    assert "ctx.durable_execute(...)` in a `def` one" in str(sync.errors[0].cause)
    assert calls == []


class SyncCallOfAsync(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "lambda":
            ctx.durable_execute(lambda: fetch("via lambda"))
        else:
            ctx.durable_execute(fetch, "direct")
        ctx.send_event(OutputEvent(output="done"))


@pytest.mark.parametrize("how", ["direct", "lambda"])
def test_durable_execute_of_a_coroutine_function_points_to_the_async_variant(how: str) -> None:
    """Scenario: ctx.durable_execute(async_fn) (or a function returning a coroutine). We
    expect: a TypeError pointing to durable_execute_async, not a serialization error; the
    coroutine never ran."""
    calls.clear()
    runner = LocalRunner(SyncCallOfAsync(), error_policy="collect")
    assert runner.run([("k", how)]) == []
    cause = runner.errors[0].cause
    assert type(cause) is TypeError and "durable_execute_async" in str(cause)
    assert calls == []


class Profile(BaseModel):
    name: str


class Remembers(Agent):
    @action(InputEvent)
    def start(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        items = memory.get("items") or []
        items.append(event.input)  # in place: a copy, so this alone changes nothing
        if event.input.startswith("keep"):
            memory.set("items", items)
        ctx.send_event(OutputEvent(output=memory.get("items")))


def test_memory_get_returns_a_copy_changes_need_set() -> None:
    """Scenario: an action appends to a list read from memory, and sets it back only
    sometimes. We expect: only what was set is kept (in this run and after a replay)."""
    runner = LocalRunner(Remembers())
    outputs = runner.run([("k", "keep-1"), ("k", "drop"), ("k", "keep-2")])
    assert [o for _, o in outputs] == [["keep-1"], ["keep-1"], ["keep-1", "keep-2"]]
    assert runner.memory("k") == {"items": ["keep-1", "keep-2"]}


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ((1, 2), "tuple"),
        (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "datetime"),
        ({"when": dt.date(2026, 1, 1)}, "['when']"),
        ([1, {"tags": {"a"}}], "set"),
        (Profile(name="ann"), "Profile"),
        ({("a", 1): 1}, "tuple"),
    ],
)
def test_memory_refuses_values_that_would_not_come_back_exactly(value: Any, named: str) -> None:
    """Scenario: memory is given values a round trip would change (tuple to list,
    datetime to string, set, pydantic model to dict). We expect: ``set`` refuses them with
    a SerializationError naming the path and the type, and memory is unchanged."""

    class Stores(Agent):
        @action(InputEvent)
        def start(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.short_term_memory.set("profile.data", value)

    runner = LocalRunner(Stores(), error_policy="collect")
    runner.run([("k", 1)])
    cause = runner.errors[0].cause
    assert isinstance(cause, SerializationError)
    assert "'profile.data" in str(cause) and named in str(cause)
    assert runner.memory("k") == {}


def test_memory_paths_under_a_plain_value_fail_alike_for_get_and_set() -> None:
    """Scenario: ``a`` holds a plain dict; an action reads and writes ``a.b``. We expect:
    both raise ValueError saying ``a`` holds a value, instead of get returning None."""
    seen: list[str] = []

    class Paths(Agent):
        @action(InputEvent)
        def start(event: InputEvent, ctx: RunnerContext) -> None:
            memory = ctx.short_term_memory
            memory.set("a", {"b": 1})
            for attempt in (lambda: memory.get("a.b"), lambda: memory.set("a.b", 2)):
                try:
                    attempt()
                except ValueError as exc:
                    seen.append(str(exc))
            ctx.send_event(OutputEvent(output=memory.get("a")))

    assert LocalRunner(Paths(), always_replay=False).run([("k", 1)]) == [("k", {"b": 1})]
    assert len(seen) == 2 and all("'a' holds a value, not an object" in s for s in seen)
