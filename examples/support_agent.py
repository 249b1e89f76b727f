"""A customer-support ReAct agent: two tools, long-term memory, any OpenAI-compatible model.

    OPENAI_BASE_URL=http://localhost:11434/v1 OPENAI_API_KEY=ollama AGENTSTREAM_MODEL=llama3.1 \\
        agentstream dev examples.support_agent:app

Without ``OPENAI_BASE_URL`` it runs offline against agentstream's ScriptedChatServer, whose
demo script plays the model's part: ``agentstream demo examples.support_agent:app``.

Each input is a customer's message keyed by the customer. The agent looks the customer's
orders up, may open a ticket, answers, and remembers the exchange in the key's long-term
memory (recalled when the same customer writes again). Every model and tool call is a
durable call: a crashed worker's replacement does not pay for completed calls again, and
does not open a ticket twice.
"""

from __future__ import annotations

import functools
import os
import re
import zlib
from typing import Any

from agentstream import AgentApp
from agentstream.agents import ReActAgent
from agentstream.llm import OpenAIChatModel, OpenAIEmbeddingModel
from agentstream.testing import ScriptedChatServer, ScriptedReply, ScriptedRequest

ORDERS: dict[str, list[dict[str, Any]]] = {
    "ann": [{"id": "A-17", "item": "teapot", "status": "shipped"}],
    "bob": [{"id": "B-4", "item": "kettle", "status": "delayed"}],
}


def lookup_orders(customer: str) -> list[dict[str, Any]]:
    """The orders of a customer.

    Args:
        customer: the customer's name.
    """
    return ORDERS.get(customer.lower(), [])


def open_ticket(customer: str, summary: str) -> str:
    """Open a support ticket for a human to follow up.

    Args:
        customer: the customer's name.
        summary: what the ticket is about.
    """
    return f"ticket T-{zlib.crc32(f'{customer}/{summary}'.encode()) % 1000:03d} opened"


PROMPT = (
    "You are a friendly support agent of a tea shop. Look the customer's orders up before "
    "answering; open a ticket when an order is delayed. Answer in one or two sentences."
)


def demo_reply(request: ScriptedRequest) -> ScriptedReply:
    """The offline demo's model: look the orders up, open a ticket if one is delayed, answer."""
    question = next(m["content"] for m in request.messages if m["role"] == "user")
    customer = (re.findall(r"[a-z]+", str(question).lower()) or ["someone"])[0]
    results = request.tool_results
    steps = sum(1 for m in request.messages if m["role"] == "tool")
    if steps == 0:
        return ScriptedReply.tools(("lookup_orders", {"customer": customer}))
    if steps == 1 and "delayed" in results[-1]:
        summary = "delayed order"
        return ScriptedReply.tools(("open_ticket", {"customer": customer, "summary": summary}))
    system = str(request.messages[0]["content"]) if request.messages else ""
    again = " Good to hear from you again!" if "remember" in system else ""
    if "[]" in results[0]:
        return ScriptedReply.text(f"Hi {customer}, I find no orders for you.{again}")
    if steps == 2:
        return ScriptedReply.text(f"Hi {customer}, your order is delayed: {results[-1]}.{again}")
    return ScriptedReply.text(f"Hi {customer}, your order has shipped.{again}")


@functools.cache
def offline_server() -> ScriptedChatServer:
    """The scripted model of the offline demo (one per process, started on first use)."""
    return ScriptedChatServer(responder=demo_reply).start()


def chat_model() -> OpenAIChatModel:
    model = os.environ.get("AGENTSTREAM_MODEL", "gpt-4o-mini")
    if os.environ.get("OPENAI_BASE_URL"):
        return OpenAIChatModel(model)  # base URL and key from the environment
    return OpenAIChatModel(model, base_url=offline_server().openai_url, api_key="offline")


def embedding_model() -> OpenAIEmbeddingModel:
    model = os.environ.get("AGENTSTREAM_EMBEDDING_MODEL", "text-embedding-3-small")
    if os.environ.get("OPENAI_BASE_URL"):
        return OpenAIEmbeddingModel(model)
    return OpenAIEmbeddingModel(model, base_url=offline_server().openai_url, api_key="offline")


agent = ReActAgent(
    "llm",
    tools=[lookup_orders, open_ticket],
    prompt=PROMPT,
    max_iterations=6,
    long_term_memory=True,
)
agent.add_resource("llm", chat_model, lazy=True)
agent.add_resource("embedding_model", embedding_model, lazy=True)

app = AgentApp(
    "support-agent",
    agent=agent,
    input_topic="support-in",
    output_topic="support-out",
    # What `agentstream demo examples.support_agent:app` sends: customers by key.
    samples=[("ann", "ann"), ("bob", "bob"), ("ann", "ann again"), ("cy", "cy")],
)
