"""The unit tier's second run: runners built without ``always_replay`` check replay."""

from __future__ import annotations

import itertools

import pytest

from agentstream import Agent, InputEvent, NonDeterministicActionError, OutputEvent, action
from agentstream.api.context import RunnerContext
from agentstream.testing import LocalRunner
from agentstream.testing._replay_default import always_replay_by_default, always_replay_default


def counter_agent() -> Agent:
    """An agent that sends a different value each time its action runs."""
    counter = itertools.count()

    class Counter(Agent):
        @action(InputEvent)
        def run(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(OutputEvent(output=next(counter)))

    return Counter()


def test_the_default_follows_the_suite_run(replay_mode: str) -> None:
    """Scenario: a non-deterministic action, run by a runner given no ``always_replay``.
    We expect: it is caught in the always_replay run of the suite, and only there (this
    holds on the compiled build too: the default is read when the runner is built)."""
    runner = LocalRunner(counter_agent())
    if replay_mode == "always_replay":
        with pytest.raises(NonDeterministicActionError):
            runner.run([("k", 1)])
    else:
        assert runner.run([("k", 1)]) == [("k", 0)]


def test_an_explicit_value_wins_over_the_default() -> None:
    with always_replay_by_default(True):
        assert LocalRunner(counter_agent(), always_replay=False).run([("k", 1)]) == [("k", 0)]
    with always_replay_by_default(False), pytest.raises(NonDeterministicActionError):
        LocalRunner(counter_agent(), always_replay=True).run([("k", 1)])


def test_the_default_is_restored_after_the_block(replay_mode: str) -> None:
    with always_replay_by_default(replay_mode != "always_replay"):
        assert always_replay_default() is (replay_mode != "always_replay")
    assert always_replay_default() is (replay_mode == "always_replay")
