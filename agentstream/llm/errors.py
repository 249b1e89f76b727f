"""Errors of the toolkit (under :class:`~agentstream.errors.AgentStreamError`)::

AgentStreamError
 └── LLMError
      ├── ChatModelError        a model call failed (model, status, request id, attempts)
      ├── ChatLoopError         the tool-calling loop went past its iterations
      └── OutputValidationError no answer fitting the output schema
"""

from __future__ import annotations

from typing import Any

from agentstream.errors import AgentStreamError

__all__ = ["ChatLoopError", "ChatModelError", "LLMError", "OutputValidationError"]


class LLMError(AgentStreamError):
    """Root of the toolkit's errors."""


class ChatModelError(LLMError):
    """A chat or embedding model call failed (after its retries, if it was retryable).

    Attributes:
        model: the model's name (e.g. ``gpt-4o-mini``).
        status: the HTTP status, or None (timeout, connection failure).
        request_id: the provider's request id, if it sent one.
        attempts: how many attempts were made.
        retryable: whether the failure was of a kind that is retried.
    """

    def __init__(
        self,
        model: str,
        status: int | None,
        request_id: str | None,
        detail: str,
        *,
        attempts: int = 1,
        retryable: bool = False,
    ):
        self.model = model
        self.status = status
        self.request_id = request_id
        self.detail = detail
        self.attempts = attempts
        self.retryable = retryable
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(
            f"model {model!r} failed: {what}, request id {request_id or 'none'}, after "
            f"{attempts} attempt(s): {detail}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_model_error,
            (self.model, self.status, self.request_id, self.detail, self.attempts, self.retryable),
        )


def _rebuild_model_error(*args: Any) -> ChatModelError:
    model, status, request_id, detail, attempts, retryable = args
    return ChatModelError(model, status, request_id, detail, attempts=attempts, retryable=retryable)


class ChatLoopError(LLMError):
    """The model kept asking for tools past the request's ``max_iterations``."""


class OutputValidationError(LLMError):
    """The model gave no answer that validates against the output schema."""
