"""Anthropic chat models, on the official ``anthropic`` SDK (``agentstream[anthropic]``).

Messages are translated to the Messages API: system messages become ``system``, tool
calls ``tool_use`` blocks, tool results ``tool_result`` blocks of a user turn. The SDK's
own retries are off; the :class:`RetryPolicy` decides.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.llm.models import AttemptFailed, ChatModel, RetryPolicy, retry_after

__all__ = ["AnthropicChatModel"]


def _sdk() -> Any:
    try:
        import anthropic
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "Anthropic models need the anthropic SDK: pip install 'agentstream[anthropic]'"
        ) from exc
    return anthropic


def _to_anthropic(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "system":
            system.append(content)
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or "",
                "content": content,
            }
            if turns and turns[-1]["role"] == "user" and isinstance(turns[-1]["content"], list):
                turns[-1]["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        calls = message.get("tool_calls") or []
        if role == "assistant" and calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
            blocks += [
                {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                for c in calls
            ]
            turns.append({"role": "assistant", "content": blocks})
        else:
            turns.append({"role": role, "content": content})
    return "\n\n".join(system), turns


class AnthropicChatModel(ChatModel):
    """A chat model behind Anthropic's Messages API.

    Args:
        model: the model's name, e.g. ``claude-opus-4-5``.
        base_url: the API's URL (default: ``ANTHROPIC_BASE_URL``, else Anthropic's).
        api_key: the API key (default: ``ANTHROPIC_API_KEY``); never shown in reprs or logs.
        max_tokens: the answer's token limit (the API requires one).
        timeout_s: the timeout of one attempt.
        retry: the retry policy (default :class:`RetryPolicy`).
        max_iterations: default limit of model calls per chat request.
        **options: default parameters of every call (temperature, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        max_iterations: int = 10,
        **options: Any,
    ):
        if not model:
            raise ConfigurationError("give the model's name, e.g. model='claude-opus-4-5'")
        self.model = model
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
        self._api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.max_iterations = max_iterations
        self.options = options

    def __repr__(self) -> str:
        return f"AnthropicChatModel(model={self.model!r}, base_url={self.base_url!r})"

    async def chat_once(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        output_schema: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        anthropic = _sdk()
        system, turns = _to_anthropic(messages)
        if output_schema is not None:
            system = (
                f"{system}\n\nAnswer with one JSON object following this JSON schema, and "
                f"nothing else:\n{json.dumps(output_schema)}"
            ).strip()
        params: dict[str, Any] = {"max_tokens": self.max_tokens, **self.options, **options}
        if system:
            params["system"] = system
        if tools:
            params["tools"] = [
                {
                    "name": t["function"]["name"],
                    "description": t["function"]["description"],
                    "input_schema": t["function"]["parameters"],
                }
                for t in tools
            ]
        try:
            client = anthropic.AsyncAnthropic(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout_s,
                max_retries=0,
            )  # fmt: skip
        except anthropic.AnthropicError as exc:
            raise ConfigurationError(
                f"AnthropicChatModel({self.model!r}): {exc} (give api_key= or set "
                "ANTHROPIC_API_KEY)"
            ) from None
        async with client:
            try:
                response = await client.messages.create(model=self.model, messages=turns, **params)
            except anthropic.APIStatusError as exc:
                raise AttemptFailed(
                    exc.status_code,
                    exc.request_id,
                    str(getattr(exc, "message", exc)),
                    retry_after(getattr(exc.response, "headers", None)),
                ) from None
            except anthropic.APITimeoutError:
                raise AttemptFailed(None, None, f"timed out after {self.timeout_s} s") from None
            except anthropic.APIConnectionError as exc:
                raise AttemptFailed(None, None, f"connection failed: {exc}") from None
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in response.content:
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                arguments = block.input if isinstance(block.input, dict) else {}
                calls.append({"id": block.id, "name": block.name, "arguments": arguments})
        usage = response.usage
        return {
            "message": {"role": "assistant", "content": "".join(text), "tool_calls": calls},
            "usage": {
                "prompt_tokens": int(getattr(usage, "input_tokens", 0) or 0),
                "completion_tokens": int(getattr(usage, "output_tokens", 0) or 0),
            },
            "request_id": getattr(response, "_request_id", None),
            "model": str(response.model or self.model),
        }
