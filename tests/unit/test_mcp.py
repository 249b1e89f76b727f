"""MCP: a server's tools are offered to the model and called like local tools, durably."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.errors import ConfigurationError
from agentstream.llm import (
    ChatMessage,
    ChatRequestEvent,
    ChatResponseEvent,
    MCPServer,
    MCPServerError,
    OpenAIChatModel,
    mcp_prompt,
)
from agentstream.testing import (
    InMemoryActionStateStore,
    LocalRunner,
    ScriptedChatServer,
    ScriptedReply,
)

ROOT = Path(__file__).resolve().parents[2]


class Orders(Agent):
    @action(InputEvent)
    async def ask(event: InputEvent, ctx: RunnerContext) -> None:
        prompt = await mcp_prompt(ctx, "orders", "apology", {"customer": "ann"})
        ctx.send_event(
            ChatRequestEvent(
                model="llm",
                tools=["orders"],
                messages=[*prompt, ChatMessage(role="user", content=event.input)],
            )
        )

    @action(ChatResponseEvent)
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.response.content))


@pytest.fixture
def server() -> Iterator[ScriptedChatServer]:
    with ScriptedChatServer() as running:
        yield running


def agent(server: ScriptedChatServer, effects: Path) -> Agent:
    mcp = MCPServer(
        command=[sys.executable, "-m", "tests.unit.mcp_demo_server"],
        cwd=ROOT,
        env={"MCP_EFFECTS": str(effects)},
    )
    model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_url, api_key="k")
    return Orders().add_resource("orders", mcp).add_resource("llm", model)


def test_mcp_tools_and_prompts_are_durable(server: ScriptedChatServer, tmp_path: Path) -> None:
    """Scenario: the model calls two tools of an MCP server over stdio (one fails); the
    input is then run again over the same records.
    We expect: the tools are offered with their schemas, each runs once, the failure goes
    back to the model, and the replay starts no MCP server and sends no request."""
    effects = tmp_path / "effects"
    server.add(
        ScriptedReply.tools(
            ("order_status", {"order_id": "A-1"}), ("cancel_order", {"order_id": "A-1"})
        ),
        ScriptedReply.text("A-1 is in transit and cannot be cancelled, sorry."),
    )
    store = InMemoryActionStateStore()
    outputs = LocalRunner(agent(server, effects), store).run([("ann", "cancel A-1")])
    assert outputs == [("ann", "A-1 is in transit and cannot be cancelled, sorry.")]
    first = server.requests[0].body
    assert first["messages"][0] == {"role": "user", "content": "Write a short apology to ann."}
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(offered) == {"order_status", "cancel_order"}
    assert offered["order_status"]["parameters"]["required"] == ["order_id"]
    results = server.requests[1].tool_results
    assert results[0] == "A-1 is in transit"
    assert results[1].startswith("error:")
    calls = effects.read_text().splitlines()
    assert sorted(calls) == ["cancel_order A-1", "order_status A-1"]

    again = LocalRunner(agent(server, effects), store).run([("ann", "cancel A-1")])
    assert again == outputs
    assert server.count() == 2
    assert effects.read_text().splitlines() == calls


def test_mcp_server_needs_one_transport() -> None:
    with pytest.raises(ConfigurationError):
        MCPServer()
    with pytest.raises(ConfigurationError):
        MCPServer("python server.py")
    shown = repr(MCPServer(["python", "-m", "x"], env={"TOKEN": "secret-token"}))
    assert "secret-token" not in shown


def test_an_unreachable_mcp_server_fails_the_input(
    server: ScriptedChatServer, tmp_path: Path
) -> None:
    broken = MCPServer(command=[str(tmp_path / "no-such-server")])
    model = OpenAIChatModel("gpt-4o-mini", base_url=server.openai_url, api_key="k")
    agent = Orders().add_resource("orders", broken).add_resource("llm", model)
    runner = LocalRunner(agent, error_policy="collect")
    assert runner.run([("ann", "hi")]) == []
    (error,) = runner.errors
    assert isinstance(error.cause, MCPServerError)
    assert "no-such-server" in str(error)
    assert server.count() == 0
