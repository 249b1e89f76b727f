"""Chat messages, tool calls and token usage: the data a conversation is made of.

Plain pydantic models, so they travel inside events, serialize into action state and
event-log records, and read back as the same classes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatMessage", "TokenUsage", "ToolCall"]

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A tool call the model asked for.

    Attributes:
        id: the model's id of the call (tool results refer to it).
        name: the tool's name.
        arguments: the arguments, decoded from the model's JSON.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One message of a conversation (Flink Agents' ``ChatMessage``).

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: the text.
        tool_calls: the tools an assistant message asks for.
        tool_call_id: for a ``tool`` message, the call it answers.
        name: for a ``tool`` message, the tool's name.
    """

    role: Role = "user"
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


class TokenUsage(BaseModel):
    """Tokens a model call (or a whole tool-calling loop) used."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    def __getitem__(self, name: str) -> int:
        """``usage["prompt_tokens"]`` works as well as ``usage.prompt_tokens``."""
        if name not in ("prompt_tokens", "completion_tokens", "total_tokens"):
            raise KeyError(name)
        return int(getattr(self, name))
