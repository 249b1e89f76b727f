"""``agentstream demo examples.support_agent:app`` works offline, as a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness import ROOT


def test_support_agent_demo_runs_offline() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [sys.executable, "-m", "agentstream", "demo", "examples.support_agent:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 outputs" in done.stdout, done.stdout
    assert "ann -> Hi ann, your order has shipped. Good to hear from you again!" in done.stdout
    assert "bob -> Hi bob, your order is delayed: ticket T-" in done.stdout
