"""The toolkit's events: a chat request, the tool calls it leads to, and its answer.

::

    ChatRequestEvent ──► chat_model_action ── model asks for tools ──► ToolRequestEvent (one
          ▲                    │                                       per call)
          │                    │ model answers                                │
     user action               ▼                                    tool_call_action
                        ChatResponseEvent ──► user actions                    │
                               ▲                                              ▼
                               └──── chat_model_action ◄──── ToolResponseEvent (all calls
                                       (calls the model again)     of a turn answered)

The built-in actions (:mod:`agentstream.llm._actions`) handle every event here except
:class:`ChatResponseEvent`, which is for the agent's own actions.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from agentstream.api.events import Event
from agentstream.llm.messages import ChatMessage, TokenUsage

__all__ = ["ChatRequestEvent", "ChatResponseEvent", "ToolRequestEvent", "ToolResponseEvent"]


class ChatRequestEvent(Event):
    """Ask the chat model resource ``model`` to continue ``messages``.

    Attributes:
        model: the name of a chat model resource of the agent.
        messages: the conversation so far.
        tools: names of tool resources the model may call.
        output_schema: a JSON schema the final answer must follow (passed to the model).
        max_iterations: the most model calls this request may make (None: the model's
            ``max_iterations``).
        request_id: ties the loop's events together (default: this event's id).
        options: model parameters (temperature, max_tokens, ...) for every call.
    """

    model: str
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[str] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    max_iterations: int | None = None
    request_id: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ChatResponseEvent(Event):
    """The model's final answer to a :class:`ChatRequestEvent`.

    Attributes:
        request_id: the request's id.
        model: the chat model resource that answered.
        response: the final assistant message.
        usage: tokens used by every model call of the request.
        messages: the whole conversation, the final answer last.
        iterations: how many model calls the request made.
    """

    request_id: str
    model: str
    response: ChatMessage
    usage: TokenUsage = Field(default_factory=TokenUsage)
    messages: list[ChatMessage] = Field(default_factory=list)
    iterations: int = 1


class ToolRequestEvent(Event):
    """One tool call the model asked for.

    Attributes:
        request_id: the chat request it belongs to.
        model: the chat model resource that asked.
        tool_call_id: the model's id of the call.
        name: the tool's name.
        arguments: its arguments.
        resource: the MCP server resource providing the tool; None when the tool is a
            resource itself.
    """

    request_id: str
    model: str
    tool_call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    resource: str | None = None


class ToolResponseEvent(Event):
    """A tool call's outcome, going back into the conversation.

    Attributes:
        request_id: the chat request it belongs to.
        tool_call_id: the call it answers.
        name: the tool's name.
        result: what the tool returned (plain data) when it succeeded.
        error: ``"Type: message"`` when it raised (the model is told so).
    """

    request_id: str
    tool_call_id: str
    name: str
    result: Any = None
    error: str | None = None

    @property
    def content(self) -> str:
        """The text the model is given for this call."""
        from agentstream.llm.tools import result_text

        if self.error is not None:
            return f"error: {self.error}"
        return result_text(self.result)
