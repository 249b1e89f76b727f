"""What the scripted model server answers and records: replies, requests, embeddings.

The data side of :mod:`agentstream.testing.scripted_server` (which serves them over HTTP).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Api",
    "ScriptedReply",
    "ScriptedRequest",
    "anthropic_messages",
    "hashed_embedding",
    "words",
]


Api = Literal["chat", "anthropic", "embeddings"]


@dataclass
class ScriptedReply:
    """One scripted answer.

    Attributes:
        content: the answer's text.
        tool_calls: ``(tool name, arguments)`` pairs the model asks for.
        status: an HTTP status other than 200 makes the reply an error.
        error: the error's message.
        retry_after_s: sent as ``retry-after`` with an error.
        delay_s: wait this long before answering.
        hold: wait until this event is set (or the server stops) before answering.
        prompt_tokens, completion_tokens: the usage reported (default: words counted).
    """

    content: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error: str = "scripted error"
    retry_after_s: float | None = None
    delay_s: float = 0.0
    hold: threading.Event | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def text(cls, content: str, **kwargs: Any) -> ScriptedReply:
        """A final answer."""
        return cls(content=content, **kwargs)

    @classmethod
    def tools(cls, *calls: tuple[str, dict[str, Any]], **kwargs: Any) -> ScriptedReply:
        """A turn asking for tool calls: ``ScriptedReply.tools(("lookup", {"id": 1}))``."""
        return cls(tool_calls=list(calls), **kwargs)

    @classmethod
    def failure(
        cls, status: int = 500, error: str = "scripted error", **kwargs: Any
    ) -> ScriptedReply:
        """An HTTP error."""
        return cls(status=status, error=error, **kwargs)


@dataclass
class ScriptedRequest:
    """A request the server received.

    Attributes:
        api: ``"chat"`` (OpenAI chat completions), ``"anthropic"`` or ``"embeddings"``.
        body: the JSON body.
        messages: the conversation in OpenAI's shape (role, content, tool_call_id),
            Anthropic's tool results as ``tool`` messages; empty for embeddings.
        number: its position among every request served (from 1).
    """

    api: Api
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    number: int

    @property
    def last(self) -> dict[str, Any]:
        """The conversation's last message."""
        return self.messages[-1] if self.messages else {}

    @property
    def tool_results(self) -> list[str]:
        """The contents of the tool messages since the last assistant message."""
        results: list[str] = []
        for message in reversed(self.messages):
            if message.get("role") != "tool":
                break
            results.insert(0, str(message.get("content") or ""))
        return results

    @property
    def text(self) -> str:
        """Every message's text (or every embedding input), joined."""
        if self.api == "embeddings":
            inputs = self.body.get("input")
            return "\n".join(inputs if isinstance(inputs, list) else [str(inputs)])
        return "\n".join(str(m.get("content") or "") for m in self.messages)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def hashed_embedding(text: str, dimensions: int = 64) -> list[float]:
    """A deterministic bag-of-words vector: texts sharing words point the same way."""
    vector = [0.0] * dimensions
    for word in words(text):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[digest[0] % dimensions] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def anthropic_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": str(body["system"])})
    for turn in body.get("messages") or []:
        content = turn.get("content")
        if isinstance(content, str):
            messages.append({"role": turn.get("role"), "content": content})
            continue
        text = "".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
        results = [b for b in content or [] if b.get("type") == "tool_result"]
        if text or not results:
            messages.append({"role": turn.get("role"), "content": text})
        for block in results:
            inner = block.get("content")
            if isinstance(inner, list):
                inner = "".join(b.get("text", "") for b in inner)
            messages.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": inner}
            )
    return messages
