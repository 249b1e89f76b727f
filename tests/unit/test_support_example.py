"""examples/support_agent.py runs offline (its scripted model) and replays deterministically."""

from __future__ import annotations

import pytest

from agentstream.testing import LocalRunner


def test_support_agent_answers_remembers_and_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from examples import support_agent

    runner = LocalRunner(support_agent.agent, always_replay=True)
    outputs = runner.run([("ann", "ann"), ("bob", "bob"), ("ann", "ann again"), ("cy", "cy")])
    assert sorted(outputs) == sorted(
        [
            ("ann", "Hi ann, your order has shipped."),
            ("bob", "Hi bob, your order is delayed: ticket T-"
             f"{support_agent.open_ticket('bob', 'delayed order')[9:12]} opened."),
            ("ann", "Hi ann, your order has shipped. Good to hear from you again!"),
            ("cy", "Hi cy, I find no orders for you."),
        ]
    )  # fmt: skip
    server = support_agent.offline_server()
    made = server.count()
    again = LocalRunner(support_agent.agent, runner.action_state_store).run(
        [("ann", "ann"), ("bob", "bob"), ("ann", "ann again"), ("cy", "cy")]
    )
    assert sorted(again) == sorted(outputs)
    assert server.count() == made, "the replay called the model"
