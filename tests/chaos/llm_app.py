"""The ReAct agent the toolkit's chaos tests run in real worker processes (configured by
environment): two tools whose side effects are appended as lines to ``$LLM_DIR/effects``,
a model behind ``$LLM_BASE_URL`` (the test's ScriptedChatServer); and ``memory_app``, whose
agent keeps and searches long-term memory."""

from __future__ import annotations

import os
from pathlib import Path

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action
from agentstream.agents import ReActAgent
from agentstream.llm import OpenAIChatModel, OpenAIEmbeddingModel, RetryPolicy

DIR = Path(os.environ.get("LLM_DIR", "."))


def effect(line: str) -> None:
    with open(DIR / "effects", "a") as f:
        f.write(line + "\n")


def lookup_order(order_id: str) -> dict:
    """Look an order up by its id.

    Args:
        order_id: the order's id.
    """
    effect(f"lookup {order_id}")
    return {"id": order_id, "status": "shipped"}


def issue_refund(order_id: str) -> str:
    """Refund an order (a side effect that must happen once).

    Args:
        order_id: the order's id.
    """
    effect(f"refund {order_id}")
    return f"refunded {order_id}"


model = OpenAIChatModel(
    "gpt-4o-mini",
    base_url=os.environ.get("LLM_BASE_URL", "http://127.0.0.1:9/v1"),
    api_key="test-key",
    timeout_s=120,  # longer than the test holds a reply: a held call is never retried
    retry=RetryPolicy(initial_backoff_s=0.05),
)

name = os.environ.get("LLM_APP", "llm-chaos")
app = AgentApp(
    name,
    agent=ReActAgent(model, tools=[lookup_order, issue_refund], prompt="You handle refunds."),
    input_topic=f"{name}-in",
    output_topic=f"{name}-out",
)


class Notes(Agent):
    """``{"add": text}`` keeps a long-term memory item; ``{"search": query}`` outputs the
    texts of the key's items, best match first."""

    @action(InputEvent)
    async def handle(event: InputEvent, ctx: RunnerContext) -> None:
        request = event.input
        if "add" in request:
            item_id = await ctx.long_term_memory.add(request["add"])
            ctx.send_event(OutputEvent(output={"added": item_id}))
        else:
            found = await ctx.long_term_memory.search(request["search"], limit=10)
            ctx.send_event(OutputEvent(output={"found": [item.text for item in found]}))


notes = Notes().add_resource(
    "embedding_model",
    OpenAIEmbeddingModel(
        "text-embedding-3-small",
        base_url=os.environ.get("LLM_BASE_URL", "http://127.0.0.1:9/v1"),
        api_key="test-key",
    ),
)
memory_app = AgentApp(
    f"{name}-notes", agent=notes, input_topic=f"{name}-notes-in", output_topic=f"{name}-notes-out"
)
