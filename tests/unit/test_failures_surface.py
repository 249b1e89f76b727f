"""Failures surface: failed sends, hung and looping actions, chained tracebacks (issue 11).

Each test runs the operator through the one key loop the worker uses (LocalRunner, or the
Operator with a sink of the test's own).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from agentstream import (
    ActionExecutionError,
    Agent,
    Event,
    InputEvent,
    OutputEvent,
    RunnerContext,
    action,
)
from agentstream.errors import ActionTimeoutError, EventLimitError, EventSendError
from agentstream.runtime.action_state import InMemoryActionStateStore
from agentstream.runtime.operator import Operator
from agentstream.runtime.records import InMemoryKeyState, InputRecord
from agentstream.testing import LocalRunner


class Echo(Agent):
    @action(InputEvent)
    def run(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.input))


class FlakySink:
    """Fails the delivery of every output whose value is "bad", after it started waiting."""

    def __init__(self) -> None:
        self.delivered: list[Any] = []

    async def emit(self, key: Any, event: OutputEvent, record: Any, watermark: Any) -> None:
        await asyncio.sleep(0)
        if event.output == "bad":
            raise ConnectionError("the broker went away")
        self.delivered.append((key, event.output))


async def test_a_send_that_fails_after_waiting_goes_through_the_error_policy() -> None:
    """Scenario: the output sink's async emit raises after its first suspension (a broker
    error while delivering), then the same key gets another input.
    We expect: the error policy receives an EventSendError naming the action and carrying
    the cause; the key moves on to its next input; no input is left in flight and no task
    exception is left unretrieved."""
    handled: list[ActionExecutionError] = []

    async def policy(error: ActionExecutionError, event: Event, record: InputRecord) -> None:
        handled.append(error)

    sink = FlakySink()
    operator = Operator(
        Echo(),
        key_state=InMemoryKeyState(),
        action_states=InMemoryActionStateStore(),
        output=sink,
        on_error=policy,
    )
    operator.on_input(InputRecord("k", "bad", "i-1"))
    operator.on_input(InputRecord("k", "good", "i-2"))
    await asyncio.wait_for(operator.drain(), 5)
    assert [type(e) for e in handled] == [EventSendError]
    assert handled[0].action == "run" and isinstance(handled[0].cause, ConnectionError)
    assert handled[0].__cause__ is handled[0].cause
    assert sink.delivered == [("k", "good")]
    assert operator.inputs_in_flight == 0 and operator.busy_keys() == 0
    assert operator.fatal == []
    gc.collect()  # an unretrieved task exception would be reported (and fail) here


async def test_a_failing_error_policy_stops_the_key_and_is_reported_not_lost() -> None:
    """Scenario: the error policy itself raises (the dead-letter topic cannot be written).
    We expect: the failure reaches the host's fatal handler (the worker stops and a
    restart resumes the key), the slot is given back, and no task exception is left."""
    fatal: list[BaseException] = []

    async def broken_policy(error: ActionExecutionError, event: Event, record: Any) -> None:
        await asyncio.sleep(0)
        raise OSError("dead-letter topic unreachable")

    operator = Operator(
        Echo(),
        key_state=InMemoryKeyState(),
        action_states=InMemoryActionStateStore(),
        output=FlakySink(),
        on_error=broken_policy,
        on_fatal=fatal.append,
        max_concurrency=1,
    )
    operator.on_input(InputRecord("a", "bad", "i-1"))
    operator.on_input(InputRecord("b", "good", "i-2"))  # waits for the only slot
    await asyncio.wait_for(operator.drain(), 5)
    assert [type(e) for e in fatal] == [OSError]
    assert operator.busy_keys() == 0
    gc.collect()


def test_an_action_error_chains_the_users_exception() -> None:
    """Scenario: an action raises TypeError on its input.
    We expect: the ActionExecutionError's __cause__ is the TypeError, whose traceback
    reaches the user's line (so pytest and the worker's log show it)."""

    class Typo(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            len(event.input)  # an int has no len: the user's line

    with pytest.raises(ActionExecutionError) as info:
        LocalRunner(Typo()).run([("k", 1)])
    cause = info.value.__cause__
    assert isinstance(cause, TypeError)
    assert cause.__traceback__ is not None
    frames = []
    tb = cause.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    assert (__file__, "run") in frames


class Hangs(Agent):
    @action(InputEvent, timeout=0.05)
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "hang":
            await asyncio.Event().wait()  # never set
        ctx.send_event(OutputEvent(output=event.input))


def test_an_action_that_never_returns_times_out_and_the_key_moves_on() -> None:
    """Scenario: an async action waits forever on its first input; the key has a second.
    We expect: the action fails with ActionTimeoutError through the error policy after its
    timeout, the metric counts it, and the key's next input is processed."""
    runner = LocalRunner(Hangs(), error_policy="collect")
    out = runner.run([("k", "hang"), ("k", "fine")])
    assert out == [("k", "fine")]
    assert [type(e) for e in runner.errors] == [ActionTimeoutError]
    error = runner.errors[0]
    assert isinstance(error, ActionTimeoutError)
    assert error.timeout_s == 0.05 and "run" in str(error) and "timeout" in str(error)
    count = runner.metrics.registry.get_sample_value(
        "agentstream_action_timeouts_total", {"action": "run"}
    )
    assert count == 1


def test_the_default_action_timeout_comes_from_the_runner() -> None:
    """Scenario: an action without its own timeout hangs; the runner sets a default.
    We expect: ActionTimeoutError with the default's value."""

    class Waits(Agent):
        @action(InputEvent)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            await asyncio.Event().wait()

    runner = LocalRunner(Waits(), error_policy="collect", action_timeout_s=0.02)
    runner.run([("k", 1)])
    assert [type(e) for e in runner.errors] == [ActionTimeoutError]


def test_an_action_raising_timeouterror_itself_is_an_ordinary_failure() -> None:
    """Scenario: an action with a timeout raises TimeoutError of its own, long before it.
    We expect: an ActionExecutionError with that cause, not an ActionTimeoutError."""

    class Raises(Agent):
        @action(InputEvent, timeout=30)
        async def run(event: InputEvent, ctx: RunnerContext) -> None:
            await asyncio.sleep(0)
            raise TimeoutError("the user's own")

    runner = LocalRunner(Raises(), error_policy="collect")
    runner.run([("k", 1)])
    assert [type(e) for e in runner.errors] == [ActionExecutionError]
    assert str(runner.errors[0].cause) == "the user's own"


class Ping(Event):
    n: int


class Pong(Event):
    n: int


class Loops(Agent):
    """A sends Ping, Ping triggers B, B sends Pong, Pong triggers A ... forever."""

    @action(InputEvent, Pong)
    def serve(event: Event, ctx: RunnerContext) -> None:
        n = event.n if isinstance(event, Pong) else 0
        ctx.send_event(Ping(n=n + 1))

    @action(Ping)
    def reply(event: Ping, ctx: RunnerContext) -> None:
        ctx.send_event(Pong(n=event.n))


def test_events_that_loop_forever_are_stopped_and_named() -> None:
    """Scenario: two actions trigger each other without end; the key has another input.
    We expect: the input fails with EventLimitError after max_events_per_input events,
    naming the last event types; the metric counts it; the key's next input runs."""

    class LoopsOrEchoes(Loops):
        @action(InputEvent)
        def echo(event: InputEvent, ctx: RunnerContext) -> None:
            if event.input == "stop":
                ctx.send_event(OutputEvent(output="next input ran"))

    runner = LocalRunner(LoopsOrEchoes(), error_policy="collect", max_events_per_input=50)
    out = runner.run([("k", "go"), ("k", "stop")])
    errors = [e for e in runner.errors if isinstance(e, EventLimitError)]
    assert errors and errors[0].limit == 50
    assert "Ping" in str(errors[0]) and "Pong" in str(errors[0])
    assert "max_events_per_input" in str(errors[0])
    assert ("k", "next input ran") in out
    count = runner.metrics.registry.get_sample_value("agentstream_event_limit_exceeded_total")
    assert count is not None and count >= 1


def test_the_default_event_bound_stops_a_loop_within_a_second() -> None:
    """Scenario: the same loop under the default bound (1,000 events).
    We expect: an EventLimitError, quickly (a runaway loop never runs on)."""
    runner = LocalRunner(Loops(), error_policy="collect")
    runner.run([("k", "go")])
    assert [type(e) for e in runner.errors] == [EventLimitError]
