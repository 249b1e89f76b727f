"""An agent written as the user guide shows passes mypy --strict and ruff with pep8-naming
(issue 16, types)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.testing import LocalRunner

ROOT = Path(__file__).resolve().parents[2]

AGENT = '''\
"""An agent as the user guide writes it."""

from typing import assert_type

from pydantic import BaseModel

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action


class Greeting(Event):
    text: str


class Answer(BaseModel):
    text: str


async def ask_llm(prompt: str) -> Answer:
    return Answer(text=prompt)


def charge(order: str) -> str:
    return f"receipt-{order}"


class Greeter(Agent):
    @action(InputEvent)
    async def start(event: InputEvent, ctx: RunnerContext) -> None:
        receipt = ctx.durable_execute(charge, str(event.input))
        assert_type(receipt, str)
        answer = await ctx.durable_execute_async(ask_llm, f"summarize {receipt}")
        assert_type(answer, Answer)
        blocking = await ctx.durable_execute_async(charge, "in the thread pool")
        assert_type(blocking, str)
        ctx.send_event(Greeting(text=f"hello {event.input}: {answer.text} {blocking}"))

    @action(Greeting, config={"prefix": ">"})
    def finish(event: Greeting, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=ctx.action_config["prefix"] + event.text))

    @action(Greeting)
    @staticmethod
    def audit(event: Greeting, ctx: RunnerContext) -> None:
        ctx.short_term_memory.set("last", event.text)


Greeter.finish(Greeting(text="x"), None)  # type: ignore[arg-type]
'''


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.no_always_replay("runs type checkers and linters, not the runtime")
def test_a_user_guide_agent_passes_mypy_strict(tmp_path: Path) -> None:
    """Scenario: an agent with durable calls, written as the user guide shows, checked
    with mypy --strict. We expect: no error; the results of durable_execute and
    durable_execute_async are typed as the function's return type (assert_type), and a
    wrong call of an action is caught (the type: ignore above is used, or mypy fails on
    warn_unused_ignores)."""
    (tmp_path / "agent.py").write_text(AGENT)
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    cache = Path(tempfile.gettempdir()) / "agentstream-test-typing-mypy-cache"
    _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--warn-unused-ignores",
        "--follow-imports=silent",
        "--cache-dir",
        str(cache),
        "agent.py",
        cwd=tmp_path,
        env=env,
    )


@pytest.mark.no_always_replay("runs type checkers and linters, not the runtime")
def test_a_user_guide_agent_passes_ruff_with_pep8_naming(tmp_path: Path) -> None:
    """Scenario: the same agent linted by ruff with pep8-naming (N) enabled and
    ``staticmethod-decorators = ["agentstream.action"]`` (what the user guide says to
    add); and an agent whose actions stack ``@staticmethod``, with no configuration. We
    expect: both pass (no N805 on actions, which have no ``self``)."""
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ruff.lint]\nselect = ["E", "F", "N"]\n'
        '[tool.ruff.lint.pep8-naming]\nstaticmethod-decorators = ["agentstream.action"]\n'
    )
    ruff = str(Path(sys.executable).with_name("ruff"))
    _run(ruff, "check", "agent.py", cwd=tmp_path)

    bare = tmp_path / "bare"
    bare.mkdir()
    stacked = AGENT.replace(
        "    @action(InputEvent)\n", "    @action(InputEvent)\n    @staticmethod\n"
    )
    stacked = stacked.replace(
        '    @action(Greeting, config={"prefix": ">"})\n',
        '    @action(Greeting, config={"prefix": ">"})\n    @staticmethod\n',
    )
    (bare / "agent.py").write_text(stacked)
    _run(ruff, "check", "--isolated", "--select", "E,F,N", "agent.py", cwd=bare)


class Stacked(Agent):
    @staticmethod
    @action(InputEvent)
    def first(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=f"1:{event.input}"))

    @action(InputEvent)
    @staticmethod
    def second(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=f"2:{event.input}"))


def test_actions_stacked_with_staticmethod_run_in_either_order() -> None:
    """Scenario: actions declared with ``@staticmethod`` over and under ``@action``
    (Flink Agents' style). We expect: both are actions, run in declaration order, and
    can be called directly like the function."""
    assert [a.name for a in Stacked().actions_for(InputEvent)] == ["first", "second"]
    assert LocalRunner(Stacked()).run([("k", "a")]) == [("k", "1:a"), ("k", "2:a")]
