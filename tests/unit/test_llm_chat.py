"""The chat loop: model calls and tool calls are durable calls, against a real HTTP server.

Every test talks to :class:`ScriptedChatServer` with the real SDK over a real socket.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.errors import ActionExecutionError
from agentstream.llm import (
    AnthropicChatModel,
    ChatLoopError,
    ChatMessage,
    ChatModelError,
    ChatRequestEvent,
    ChatResponseEvent,
    OpenAIChatModel,
    RetryPolicy,
    tool,
)
from agentstream.testing import (
    InMemoryActionStateStore,
    LocalRunner,
    ScriptedChatServer,
    ScriptedReply,
)

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.01)
ORDERS: list[str] = []


@tool
def lookup_order(order_id: str) -> dict:
    """Look an order up by its id.

    Args:
        order_id: the order's id.
    """
    ORDERS.append(order_id)
    return {"id": order_id, "status": "shipped"}


@tool
async def refund(order_id: str, amount: float) -> str:
    """Refund part of an order."""
    if amount > 100:
        raise ValueError("refunds over 100 need a human")
    return f"refunded {amount} on {order_id}"


class Support(Agent):
    lookup = lookup_order
    refund_tool = refund

    @action(InputEvent)
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(
            ChatRequestEvent(
                model="llm",
                tools=["lookup_order", "refund"],
                messages=[ChatMessage(role="user", content=event.input)],
            )
        )

    @action(ChatResponseEvent)
    def answer(event: ChatResponseEvent, ctx: RunnerContext) -> None:
        ctx.send_event(
            OutputEvent(
                output={
                    "text": event.response.content,
                    "iterations": event.iterations,
                    "prompt_tokens": event.usage.prompt_tokens,
                    "completion_tokens": event.usage["completion_tokens"],
                }
            )
        )


@pytest.fixture
def server() -> Iterator[ScriptedChatServer]:
    with ScriptedChatServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _clear_orders() -> None:
    ORDERS.clear()


def openai_agent(server: ScriptedChatServer, **kwargs: Any) -> Support:
    kwargs.setdefault("retry", FAST)
    model = OpenAIChatModel(
        model="gpt-4o-mini", base_url=server.openai_url, api_key="sk-secret-1", **kwargs
    )
    return Support().add_resource("llm", model)  # type: ignore[return-value]


def sample(runner: LocalRunner, name: str, **labels: str) -> float:
    """The value of the sample ``agentstream_user_<name>`` with ``labels`` (0 if absent)."""
    value = runner.metrics.registry.get_sample_value(f"agentstream_user_{name}", labels)
    return value or 0.0


def test_tool_loop_answers_and_replays_without_calls(server: ScriptedChatServer) -> None:
    """Scenario: the model asks for a tool, gets its result, answers; the whole input is run
    again by a new runner over the same action state. We expect: the answer carries the
    usage of both model calls; the replay answers the same with no request and no tool call."""
    server.add(
        ScriptedReply.tools(("lookup_order", {"order_id": "A-1"}), prompt_tokens=10),
        ScriptedReply.text("A-1 has shipped.", prompt_tokens=20, completion_tokens=4),
    )
    store = InMemoryActionStateStore()
    first = LocalRunner(openai_agent(server), store, always_replay=True).run([("k1", "A-1?")])
    assert first == [
        (
            "k1",
            {"text": "A-1 has shipped.", "iterations": 2, "prompt_tokens": 30,
             "completion_tokens": 9},
        )
    ]  # fmt: skip
    assert server.count("chat") == 2
    assert ORDERS == ["A-1"]
    tool_message = server.requests[1].messages[-1]
    assert tool_message["role"] == "tool"
    assert '"shipped"' in tool_message["content"]
    assert tool_message["tool_call_id"] == "call_1_0"

    again = LocalRunner(openai_agent(server), store)
    assert again.run([("k1", "A-1?")]) == first
    assert server.count() == 2, "the replay called the model"
    assert ORDERS == ["A-1"], "the replay ran the tool"


def test_always_replay_reruns_every_action_from_its_record(server: ScriptedChatServer) -> None:
    """Scenario: always_replay re-runs each built-in action after it ran.
    We expect: those re-runs make no request and run no tool; metrics count them as saved."""
    server.add(
        ScriptedReply.tools(
            ("lookup_order", {"order_id": "B-2"}), ("lookup_order", {"order_id": "C-3"})
        ),
        ScriptedReply.text("both shipped"),
    )
    runner = LocalRunner(openai_agent(server), always_replay=True)
    assert runner.run([("k", "B-2 and C-3?")])[0][1]["text"] == "both shipped"
    assert server.count() == 2
    assert sorted(ORDERS) == ["B-2", "C-3"]
    labels = {"agent": "Support", "action": "tool_call_action"}
    assert sample(runner, "llm_calls_saved_total", kind="tool", **labels) == 2
    assert sample(runner, "llm_tool_calls_total", tool="lookup_order", **labels) == 2
    chat = {"agent": "Support", "action": "chat_model_action", "model": "gpt-4o-mini"}
    assert sample(runner, "llm_model_calls_total", **chat) == 2
    assert sample(runner, "llm_prompt_tokens_total", **chat) > 0
    assert sample(runner, "llm_completion_tokens_total", **chat) > 0
    assert sample(runner, "llm_model_call_seconds_count", **chat) == 2


def test_tool_failures_and_unknown_tools_go_back_to_the_model(server: ScriptedChatServer) -> None:
    server.add(
        ScriptedReply.tools(
            ("refund", {"order_id": "A-1", "amount": 500}), ("delete_everything", {})
        ),
        ScriptedReply.text("I cannot do that."),
    )
    runner = LocalRunner(openai_agent(server))
    assert runner.run([("k", "refund 500")])[0][1]["text"] == "I cannot do that."
    results = server.requests[1].tool_results
    assert results[0] == "error: ValueError: refunds over 100 need a human"
    assert "no tool named 'delete_everything'" in results[1]
    labels = {"agent": "Support", "action": "tool_call_action", "tool": "refund"}
    assert sample(runner, "llm_tool_failures_total", **labels) == 1


def test_retryable_errors_are_retried_with_backoff(server: ScriptedChatServer) -> None:
    server.add(
        ScriptedReply.failure(429, "slow down", retry_after_s=0),
        ScriptedReply.failure(503),
        ScriptedReply.text("fine"),
    )
    assert LocalRunner(openai_agent(server)).run([("k", "hi")])[0][1]["text"] == "fine"
    assert server.count() == 3


def test_timeouts_are_retried(server: ScriptedChatServer) -> None:
    release = threading.Event()
    server.add(ScriptedReply.text("late", hold=release), ScriptedReply.text("on time"))
    try:
        runner = LocalRunner(openai_agent(server, timeout_s=0.3))
        assert runner.run([("k", "hi")])[0][1]["text"] == "on time"
    finally:
        release.set()
    assert server.count() == 2


def test_failure_past_the_policy_names_model_status_and_request_id(
    server: ScriptedChatServer,
) -> None:
    server.add(*[ScriptedReply.failure(500, "upstream broke")] * 3)
    runner = LocalRunner(openai_agent(server), error_policy="collect")
    assert runner.run([("k", "hi")]) == []
    assert server.count() == 3
    (error,) = runner.errors
    assert isinstance(error, ActionExecutionError)
    assert error.action == "chat_model_action"
    cause = error.cause
    assert isinstance(cause, ChatModelError)
    assert (cause.model, cause.status, cause.request_id, cause.attempts) == (
        "gpt-4o-mini", 500, "req_scripted_3", 3,
    )  # fmt: skip
    assert "gpt-4o-mini" in str(error) and "500" in str(error) and "req_scripted_3" in str(error)


def test_client_errors_are_not_retried(server: ScriptedChatServer) -> None:
    server.add(ScriptedReply.failure(400, "bad request"), ScriptedReply.text("never"))
    runner = LocalRunner(openai_agent(server), error_policy="collect")
    runner.run([("k", "hi")])
    assert server.count() == 1
    assert runner.errors[0].cause.status == 400  # type: ignore[attr-defined]


def test_max_iterations_stops_a_model_that_keeps_calling_tools(server: ScriptedChatServer) -> None:
    server.responder = lambda request: ScriptedReply.tools(("lookup_order", {"order_id": "X"}))
    runner = LocalRunner(openai_agent(server, max_iterations=3), error_policy="collect")
    runner.run([("k", "loop")])
    assert server.count() == 3
    (error,) = runner.errors
    assert isinstance(error.cause, ChatLoopError)
    assert "max_iterations=3" in str(error)


def test_keys_run_their_loops_independently(server: ScriptedChatServer) -> None:
    def respond(request: Any) -> ScriptedReply:
        if request.last["role"] == "user":
            return ScriptedReply.tools(("lookup_order", {"order_id": request.last["content"]}))
        return ScriptedReply.text(f"done: {request.tool_results[0]}")

    server.responder = respond
    outputs = LocalRunner(openai_agent(server), always_replay=True).run(
        [(f"k{i}", f"O-{i}") for i in range(5)]
    )
    assert sorted(o["text"] for _, o in outputs) == sorted(
        f'done: {{"id": "O-{i}", "status": "shipped"}}' for i in range(5)
    )
    assert server.count() == 10
    assert sorted(ORDERS) == [f"O-{i}" for i in range(5)]


def test_anthropic_messages_api(server: ScriptedChatServer) -> None:
    server.add(
        ScriptedReply.tools(("lookup_order", {"order_id": "Z-9"})),
        ScriptedReply.text("Z-9 shipped", prompt_tokens=7, completion_tokens=2),
    )
    model = AnthropicChatModel(
        "claude-test", base_url=server.url, api_key="sk-ant-secret", retry=FAST
    )
    agent = Support().add_resource("llm", model)
    outputs = LocalRunner(agent, always_replay=True).run([("k", "Z-9?")])
    assert outputs[0][1]["text"] == "Z-9 shipped"
    assert [r.api for r in server.requests] == ["anthropic", "anthropic"]
    second = server.requests[1].body
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert second["tools"][0]["input_schema"]["required"] == ["order_id"]
    assert ORDERS == ["Z-9"]


def test_anthropic_errors_carry_status_and_request_id(server: ScriptedChatServer) -> None:
    server.add(ScriptedReply.failure(529, "overloaded"), ScriptedReply.failure(401, "bad key"))
    model = AnthropicChatModel("claude-x", base_url=server.url, api_key="k", retry=FAST)
    runner = LocalRunner(Support().add_resource("llm", model), error_policy="collect")
    runner.run([("k", "hi")])
    cause = runner.errors[0].cause
    assert isinstance(cause, ChatModelError)
    assert (cause.status, cause.request_id, cause.attempts) == (401, "req_scripted_2", 2)


def test_api_keys_never_show() -> None:
    openai_model = OpenAIChatModel(
        "gpt-4o-mini", base_url="http://127.0.0.1:1/v1", api_key="sk-top"
    )
    anthropic_model = AnthropicChatModel("claude", api_key="sk-ant-top")
    for shown in (repr(openai_model), str(openai_model), repr(anthropic_model)):
        assert "top" not in shown
    assert "sk-top" not in repr(vars(openai_model).get("api_key"))


class _Records:
    """An in-memory event logger."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def open(self) -> None: ...

    def append(self, record: Any) -> None:
        self.records.append(record)

    def flush(self) -> None: ...

    def close(self) -> None: ...


def test_every_call_has_event_log_records(server: ScriptedChatServer) -> None:
    """Each model call and tool call shows in the event log: the prompt, the tool's
    arguments and result, the answer with its usage; big payloads truncated."""
    server.add(ScriptedReply.tools(("lookup_order", {"order_id": "E-1"})), ScriptedReply.text("ok"))
    log = _Records()
    LocalRunner(openai_agent(server), event_logger=log).run([("k", "E-1?")])
    by_type = {type(r.event).__name__: r for r in log.records}
    request = by_type["ChatRequestEvent"].to_json_dict()
    assert request["payload"]["messages"][0]["content"] == "E-1?"
    tool_request = by_type["ToolRequestEvent"].to_json_dict()
    assert tool_request["action"] == "chat_model_action"
    assert tool_request["payload"]["arguments"] == {"order_id": "E-1"}
    tool_response = by_type["ToolResponseEvent"].to_json_dict()
    assert tool_response["action"] == "tool_call_action"
    assert tool_response["payload"]["result"] == {"id": "E-1", "status": "shipped"}
    answer = by_type["ChatResponseEvent"].to_json_dict()
    assert answer["payload"]["response"]["content"] == "ok"
    assert answer["payload"]["usage"]["completion_tokens"] > 0
    truncated = by_type["ChatResponseEvent"].to_json_dict(max_payload_bytes=40)
    assert truncated["payload"]["truncated"] is True


def test_tool_calls_without_ids_get_unique_ones() -> None:
    """Some OpenAI-compatible servers send tool calls without ids, or one id twice: each
    call still gets an id of its own, so each answer finds its call."""
    from agentstream.llm._actions import _unique_ids

    calls = [{"id": "dup", "name": "a"}, {"id": "dup", "name": "b"}, {"id": "", "name": "c"}]
    assert [c["id"] for c in _unique_ids(calls, 3)] == ["dup", "call_3_1", "call_3_2"]
