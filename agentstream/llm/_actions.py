"""The built-in actions of the toolkit: the chat-model action and the tool-call action.

Every agent has them (registered with :func:`~agentstream.api.agent.register_builtin_action`
when :mod:`agentstream.llm` is imported). Each model call and each tool call is a durable
call: recorded with its outcome, so a replay (after a crash, or in the "always replay"
check) is answered from the record and never calls the model or the tool again.

A request's conversation lives in sensory memory while tools run (one entry per request,
written whole at each step, so the recorded memory updates replay it exactly)::

    ChatRequestEvent ─► model call (durable) ─► tool calls? ─ no ─► ChatResponseEvent
                                 ▲                   │ yes
                                 │                   ▼
                   all answered? ◄─ ToolResponseEvent ◄─ tool call (durable) ◄─ ToolRequestEvent
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from typing import Any

from agentstream.api.context import RunnerContext
from agentstream.llm._probe import LATENCY_BUCKETS, Probe, saved_by_replay
from agentstream.llm.errors import ChatLoopError, ChatModelError
from agentstream.llm.events import (
    ChatRequestEvent,
    ChatResponseEvent,
    ToolRequestEvent,
    ToolResponseEvent,
)
from agentstream.llm.mcp import MCPServer, call_tool_durably, list_tools_durably
from agentstream.llm.messages import ChatMessage, TokenUsage
from agentstream.llm.models import ChatModel
from agentstream.llm.tools import Tool, as_tool, plain

__all__ = ["CHAT_ACTION", "TOOL_ACTION", "chat_model_action", "tool_call_action"]

CHAT_ACTION = "chat_model_action"
TOOL_ACTION = "tool_call_action"
_CONVERSATIONS = "_agentstream_chat"


async def _call_model(
    model: ChatModel,
    probe: Probe,
    resource: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    output_schema: dict[str, Any] | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """One durable model call (retries included); ``resource`` is part of its identity."""
    probe.called = True
    group = probe.group.sub_group("model", model.model)
    started = time.perf_counter()
    try:
        result = await model.chat(messages, tools, output_schema, options)
    except ChatModelError:
        group.counter("llm_model_errors", "Model calls that failed after retries.").inc()
        raise
    finally:
        group.counter("llm_model_calls", "Model calls made.").inc()
        group.histogram(
            "llm_model_call_seconds", "Model call latency (retries included).", LATENCY_BUCKETS
        ).observe(time.perf_counter() - started)
    usage = result.get("usage") or {}
    group.counter("llm_prompt_tokens", "Prompt tokens used.").inc(usage.get("prompt_tokens", 0))
    group.counter("llm_completion_tokens", "Completion tokens used.").inc(
        usage.get("completion_tokens", 0)
    )
    return result


async def _run_tool(
    tool: Tool, probe: Probe, name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """One durable tool call: ``{"ok": True, "result": ...}`` or ``{"ok": False, "error":
    "Type: message"}`` (a failing tool is an answer the model sees, not a failed input)."""
    probe.called = True
    group = probe.group.sub_group("tool", name)
    group.counter("llm_tool_calls", "Tool calls made.").inc()
    try:
        kwargs = tool.validate(arguments)
        if tool.is_async:
            result = await tool.fn(**kwargs)
        else:
            result = await asyncio.to_thread(functools.partial(tool.fn, **kwargs))
        return {"ok": True, "result": plain(result)}
    except Exception as exc:
        group.counter("llm_tool_failures", "Tool calls that raised.").inc()
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _path(request_id: str) -> str:
    digest = hashlib.blake2b(request_id.encode(), digest_size=12).hexdigest()
    return f"{_CONVERSATIONS}.r{digest}"


def _chat_model(ctx: RunnerContext, name: str) -> ChatModel:
    model = ctx.get_resource(name)
    if not isinstance(model, ChatModel):
        raise TypeError(f"resource {name!r} is a {type(model).__name__}, not a chat model")
    return model


async def chat_model_action(event: Any, ctx: RunnerContext) -> None:
    """Handles ChatRequestEvent (starts a request) and ToolResponseEvent (goes on with it)."""
    if isinstance(event, ChatRequestEvent):
        model = _chat_model(ctx, event.model)
        request_id = event.request_id or str(event.id)
        state: dict[str, Any] = {
            "request_id": request_id,
            "model": event.model,
            "messages": [m.model_dump() for m in event.messages],
            "tools": list(event.tools),
            **await _resolve_tools(ctx, event.tools),
            "output_schema": event.output_schema,
            "options": dict(event.options),
            "max_iterations": event.max_iterations or model.max_iterations,
            "iterations": 0,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0},
            "pending": [],
            "answers": {},
        }
        await _converse(ctx, state)
        return
    if not isinstance(event, ToolResponseEvent):
        return
    saved = ctx.sensory_memory.get(_path(event.request_id))
    if not isinstance(saved, dict):
        return  # a tool response of no chat request of ours (the agent sent the request)
    state = dict(saved)
    state["answers"] = {**state["answers"], event.tool_call_id: _answer(event)}
    await _converse(ctx, state)


async def _resolve_tools(ctx: RunnerContext, names: list[str]) -> dict[str, Any]:
    """The schemas of the request's tools, and which resource provides each: a tool
    resource itself (None), or the MCP server resource that lists it."""
    schemas: list[dict[str, Any]] = []
    owners: dict[str, str | None] = {}
    for name in names:
        resource = ctx.get_resource(name)
        if isinstance(resource, MCPServer):
            for schema in await list_tools_durably(ctx, name):
                schemas.append(schema)
                owners[schema["function"]["name"]] = name
        else:
            schemas.append(as_tool(resource, name).schema())
            owners[name] = None
    return {"tool_schemas": schemas, "owners": owners}


def _unique_ids(calls: list[dict[str, Any]], iteration: int) -> list[dict[str, Any]]:
    """The tool calls with ids unique in the conversation (some servers send none, or the
    same one twice): an answer must find its call."""
    seen: set[str] = set()
    unique = []
    for index, call in enumerate(calls):
        ident = str(call.get("id") or "")
        if not ident or ident in seen:
            ident = f"call_{iteration}_{index}"
        seen.add(ident)
        unique.append({**call, "id": ident})
    return unique


def _answer(event: ToolResponseEvent) -> dict[str, Any]:
    return {"name": event.name, "content": event.content}


async def _converse(ctx: RunnerContext, state: dict[str, Any]) -> None:
    """Call the model until it asks for tools not answered yet, or answers."""
    path = _path(state["request_id"])
    while True:
        pending: list[dict[str, Any]] = state["pending"]
        if any(call["id"] not in state["answers"] for call in pending):
            ctx.sensory_memory.set(path, state)  # wait for the other tool responses
            return
        messages = list(state["messages"])
        for call in pending:
            answer = state["answers"][call["id"]]
            messages.append(
                ChatMessage(
                    role="tool",
                    content=answer["content"],
                    tool_call_id=call["id"],
                    name=answer["name"],
                ).model_dump()
            )
        state = {**state, "messages": messages, "pending": [], "answers": {}}
        if state["iterations"] >= state["max_iterations"]:
            raise ChatLoopError(
                f"chat request {state['request_id']} to {state['model']!r} still calls tools "
                f"after {state['iterations']} model calls (max_iterations="
                f"{state['max_iterations']}); raise it or give the model fewer tools"
            )
        result = await _model_call(ctx, state)
        calls = _unique_ids(result["message"].get("tool_calls") or [], state["iterations"])
        message = {**result["message"], "tool_calls": calls}
        usage = result.get("usage") or {}
        state = {
            **state,
            "messages": [*messages, message],
            "iterations": state["iterations"] + 1,
            "usage": {
                name: state["usage"][name] + int(usage.get(name, 0))
                for name in ("prompt_tokens", "completion_tokens")
            },
        }
        if not calls:
            ctx.sensory_memory.set(path, None)
            conversation = [ChatMessage.model_validate(m) for m in state["messages"]]
            ctx.send_event(
                ChatResponseEvent(
                    request_id=state["request_id"],
                    model=state["model"],
                    response=conversation[-1],
                    usage=TokenUsage.model_validate(state["usage"]),
                    messages=conversation,
                    iterations=state["iterations"],
                )
            )
            return
        answers: dict[str, Any] = {}
        for call in calls:
            if call["name"] not in state["owners"]:
                answers[call["id"]] = {
                    "name": call["name"],
                    "content": f"error: no tool named {call['name']!r}; "
                    f"the tools are {sorted(state['owners'])}",
                }
            else:
                ctx.send_event(
                    ToolRequestEvent(
                        request_id=state["request_id"],
                        model=state["model"],
                        tool_call_id=call["id"],
                        name=call["name"],
                        arguments=call.get("arguments") or {},
                        resource=state["owners"][call["name"]],
                    )
                )
        state = {**state, "pending": list(calls), "answers": answers}


async def _model_call(ctx: RunnerContext, state: dict[str, Any]) -> dict[str, Any]:
    model = _chat_model(ctx, state["model"])
    tools = state["tool_schemas"]
    probe = Probe(ctx.action_metric_group)
    result: dict[str, Any] = await ctx.durable_execute_async(
        functools.partial(_call_model, model, probe),
        state["model"],
        state["messages"],
        tools,
        state["output_schema"],
        state["options"],
    )
    if not probe.called:
        saved_by_replay(ctx, "model")
    return result


async def tool_call_action(event: ToolRequestEvent, ctx: RunnerContext) -> None:
    """Runs one tool call (durably) and sends its :class:`ToolResponseEvent`."""
    if event.resource is not None:  # a tool of an MCP server
        answer = await call_tool_durably(ctx, event.resource, event.name, event.arguments)
        ctx.send_event(_response(event, answer))
        return
    try:
        tool = as_tool(ctx.get_resource(event.name), event.name)
    except KeyError:
        ctx.send_event(
            ToolResponseEvent(
                request_id=event.request_id,
                tool_call_id=event.tool_call_id,
                name=event.name,
                error=f"KeyError: no tool named {event.name!r}",
            )
        )
        return
    probe = Probe(ctx.action_metric_group)
    outcome: dict[str, Any] = await ctx.durable_execute_async(
        functools.partial(_run_tool, tool, probe), event.name, event.arguments
    )
    if not probe.called:
        saved_by_replay(ctx, "tool")
    ctx.send_event(_response(event, outcome))


def _response(event: ToolRequestEvent, outcome: dict[str, Any]) -> ToolResponseEvent:
    return ToolResponseEvent(
        request_id=event.request_id,
        tool_call_id=event.tool_call_id,
        name=event.name,
        result=outcome.get("result") if outcome["ok"] else None,
        error=None if outcome["ok"] else str(outcome.get("error")),
    )
