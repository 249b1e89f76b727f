"""``ReActAgent``: a ready agent that reasons and acts with tools until it can answer.

::

    InputEvent ─► ChatRequestEvent(system prompt, input, tools) ─► [the toolkit's loop:
    model ⇄ tools, each call durable] ─► ChatResponseEvent ─► output_schema? ─ no ─► OutputEvent
                                                                  │ yes
                           validates ─► OutputEvent(instance) ◄───┤
                           does not, iterations left ─► ChatRequestEvent (the conversation
                                                        plus what was wrong) ─► ...
                           does not, none left ─► OutputValidationError (error policy)

``max_iterations`` bounds the model calls of one input, corrections included. With
``long_term_memory=True`` the agent recalls the key's items most similar to the input into
the system prompt, and remembers each question and answer (``ctx.long_term_memory``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from agentstream.api.agent import Agent
from agentstream.api.context import RunnerContext
from agentstream.api.events import InputEvent, OutputEvent
from agentstream.errors import ConfigurationError
from agentstream.llm.errors import OutputValidationError
from agentstream.llm.events import ChatRequestEvent, ChatResponseEvent
from agentstream.llm.messages import ChatMessage
from agentstream.llm.models import ChatModel
from agentstream.llm.tools import Tool, as_tool

__all__ = ["ReActAgent"]

DEFAULT_PROMPT = (
    "You are a helpful assistant. Think step by step; call the tools you are given when "
    "they help, and answer once you know the answer."
)
_USED = "_agentstream_react.iterations"
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _input_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _json_text(content: str) -> str:
    text = content.strip()
    match = _FENCE.match(text)
    return match.group(1) if match else text


class ReActAgent(Agent):
    """Answers each input with a model that may call tools (ReAct), optionally as a
    validated ``output_schema`` instance.

    Args:
        model: a chat model (registered as the resource ``"react_model"``) or the name of
            a chat model resource added with :meth:`~agentstream.Agent.add_resource`.
        tools: tools the model may call: functions, :class:`~agentstream.llm.Tool` objects,
            or names of tool resources.
        prompt: the system prompt (default: a short ReAct instruction).
        output_schema: a pydantic model the answer must validate against; the output is
            then an instance of it. None: the output is the answer's text.
        max_iterations: the most model calls per input (corrections included).
        name: the agent's name (default: the class name).
        long_term_memory: recall the key's most similar items (needs an embedding model
            resource, see :mod:`agentstream.llm.memory`) and remember each exchange.
        recall_limit: how many items to recall.
    """

    def __init__(
        self,
        model: ChatModel | str,
        tools: Sequence[Callable[..., Any] | Tool | str] = (),
        prompt: str | None = None,
        output_schema: type[BaseModel] | None = None,
        max_iterations: int = 10,
        *,
        name: str | None = None,
        long_term_memory: bool = False,
        recall_limit: int = 3,
    ):
        super().__init__()
        if name:
            self.name = name
        if max_iterations < 1:
            raise ConfigurationError("ReActAgent max_iterations must be at least 1")
        if output_schema is not None and not (
            isinstance(output_schema, type) and issubclass(output_schema, BaseModel)
        ):
            raise ConfigurationError("ReActAgent output_schema must be a pydantic model class")
        if isinstance(model, str):
            self.model_resource = model
        elif isinstance(model, ChatModel):
            self.model_resource = "react_model"
            self.add_resource(self.model_resource, model)
        else:
            raise ConfigurationError(
                f"ReActAgent model: a ChatModel or a resource name, not {model!r}"
            )
        self.tool_names: list[str] = []
        for item in tools:
            if isinstance(item, str):
                self.tool_names.append(item)
                continue
            converted = as_tool(item)
            self.add_tool(converted, name=converted.name)
            self.tool_names.append(converted.name)
        self.prompt = prompt or DEFAULT_PROMPT
        self.output_schema = output_schema
        self.max_iterations = max_iterations
        self.long_term_memory = long_term_memory
        self.recall_limit = recall_limit
        self.add_action("react_start", [InputEvent], self._start)
        self.add_action("react_finish", [ChatResponseEvent], self._finish)

    def _system_prompt(self) -> str:
        if self.output_schema is None:
            return self.prompt
        schema = json.dumps(self.output_schema.model_json_schema())
        return (
            f"{self.prompt}\n\nYour final answer must be one JSON object, nothing else, "
            f"following this JSON schema:\n{schema}"
        )

    def _request(self, messages: list[ChatMessage], iterations: int) -> ChatRequestEvent:
        return ChatRequestEvent(
            model=self.model_resource,
            messages=messages,
            tools=list(self.tool_names),
            output_schema=(
                self.output_schema.model_json_schema() if self.output_schema is not None else None
            ),
            max_iterations=iterations,
        )

    async def _start(self, event: InputEvent, ctx: RunnerContext) -> None:
        ctx.sensory_memory.set(_USED, 0)
        question = _input_text(event.input)
        system = self._system_prompt()
        if self.long_term_memory:
            recalled = await ctx.long_term_memory.search(question, limit=self.recall_limit)
            if recalled:
                lines = "\n".join(f"- {item.text}" for item in recalled)
                system = f"{system}\n\nWhat you remember of this conversation partner:\n{lines}"
        messages = [
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=question),
        ]
        ctx.send_event(self._request(messages, self.max_iterations))

    async def _finish(self, event: ChatResponseEvent, ctx: RunnerContext) -> None:
        if event.model != self.model_resource:
            return  # a chat request of another action of a subclass
        used = int(ctx.sensory_memory.get(_USED) or 0) + event.iterations
        ctx.sensory_memory.set(_USED, used)
        if self.output_schema is None:
            await self._remember(event, ctx)
            ctx.send_event(OutputEvent(output=event.response.content))
            return
        try:
            answer = self.output_schema.model_validate_json(_json_text(event.response.content))
        except ValidationError as exc:
            problem = str(exc)
            if used >= self.max_iterations:
                raise OutputValidationError(
                    f"{self.name}: no answer fitting {self.output_schema.__name__} within "
                    f"max_iterations={self.max_iterations} model calls; the last answer was "
                    f"{event.response.content[:200]!r}: {problem}"
                ) from None
            correction = ChatMessage(
                role="user",
                content=(
                    "Your answer does not follow the JSON schema: "
                    f"{problem}\nAnswer again with one JSON object only."
                ),
            )
            ctx.send_event(self._request([*event.messages, correction], self.max_iterations - used))
            return
        await self._remember(event, ctx)
        ctx.send_event(OutputEvent(output=answer))

    async def _remember(self, event: ChatResponseEvent, ctx: RunnerContext) -> None:
        if not self.long_term_memory:
            return
        question = next((m.content for m in event.messages if m.role == "user"), "")
        await ctx.long_term_memory.add(
            f"asked: {question} / answered: {event.response.content}",
            {"request_id": event.request_id},
        )
