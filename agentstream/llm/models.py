"""Chat models: the resource a :class:`~agentstream.llm.ChatRequestEvent` names.

A :class:`ChatModel` makes one call in :meth:`ChatModel.chat_once` (provider-specific:
:class:`~agentstream.llm.OpenAIChatModel`, :class:`~agentstream.llm.AnthropicChatModel`)
and :meth:`ChatModel.chat` wraps it in the retry policy. Both speak plain data (message
dicts in, a result dict out) because that is what a durable call records.
"""

from __future__ import annotations

import abc
import asyncio
import random
from dataclasses import dataclass
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.llm.errors import ChatModelError

__all__ = ["ChatModel", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed model call is retried.

    Attributes:
        max_attempts: attempts in all (1: no retry).
        initial_backoff_s: the wait before the second attempt.
        max_backoff_s: the longest wait between attempts (also caps ``retry-after``).
        multiplier: each wait is this many times the previous one.
        jitter: each wait varies randomly by up to this fraction.
        retry_statuses: HTTP statuses worth retrying (timeouts and connection failures
            always are).
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.1
    retry_statuses: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ConfigurationError("RetryPolicy: backoffs >= 0 and multiplier >= 1")

    def retryable(self, status: int | None) -> bool:
        return status is None or status in self.retry_statuses

    def backoff_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_backoff_s)
        wait = min(self.initial_backoff_s * self.multiplier ** (attempt - 1), self.max_backoff_s)
        return wait * (1 + self.jitter * (2 * random.random() - 1))


class AttemptFailed(Exception):
    """One attempt failed (internal: :meth:`ChatModel.chat` decides whether to retry)."""

    def __init__(
        self,
        status: int | None,
        request_id: str | None,
        detail: str,
        retry_after_s: float | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.request_id = request_id
        self.detail = detail
        self.retry_after_s = retry_after_s


class ChatModel(abc.ABC):
    """A chat model resource.

    Attributes:
        model: the provider's model name.
        retry: the retry policy of each call.
        max_iterations: default limit of model calls per chat request.
    """

    model: str
    retry: RetryPolicy
    max_iterations: int

    @abc.abstractmethod
    async def chat_once(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        output_schema: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """One call. Returns ``{"message": ChatMessage dict, "usage": {"prompt_tokens",
        "completion_tokens"}, "request_id": str | None, "model": str}``; raises
        :class:`AttemptFailed`."""

    async def chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        output_schema: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`chat_once` under the retry policy; :class:`ChatModelError` past it."""
        return await retrying(
            self.model,
            self.retry,
            lambda: self.chat_once(messages, tools, output_schema, dict(options or {})),
        )


async def retrying(model: str, policy: RetryPolicy, attempt_fn: Any) -> dict[str, Any]:
    """Run ``attempt_fn()`` until it succeeds, fails for good, or attempts run out."""
    attempt = 0
    while True:
        attempt += 1
        try:
            result: dict[str, Any] = await attempt_fn()
            result["attempts"] = attempt
            return result
        except AttemptFailed as failed:
            retryable = policy.retryable(failed.status)
            if not retryable or attempt >= policy.max_attempts:
                raise ChatModelError(
                    model,
                    failed.status,
                    failed.request_id,
                    failed.detail,
                    attempts=attempt,
                    retryable=retryable,
                ) from None
            await asyncio.sleep(policy.backoff_s(attempt, failed.retry_after_s))


def retry_after(headers: Any) -> float | None:
    """Seconds a ``retry-after`` header asks for, if it is a number."""
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def secret_repr(api_key: str | None) -> str:
    return "None" if api_key is None else "'***'"
