"""OpenAI chat and embedding models, on the official ``openai`` SDK (``agentstream[openai]``).

Any OpenAI-compatible server works (Ollama, vLLM, LM Studio, Azure, the scripted test
server): set ``base_url``. The SDK's own retries are off; the :class:`RetryPolicy` decides.
"""

from __future__ import annotations

import json
import os
from typing import Any

from agentstream.errors import ConfigurationError
from agentstream.llm.models import AttemptFailed, ChatModel, RetryPolicy, retry_after, retrying

__all__ = ["OpenAIChatModel", "OpenAIEmbeddingModel"]


def _sdk() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "OpenAI models need the openai SDK: pip install 'agentstream[openai]'"
        ) from exc
    return openai


class _OpenAIClient:
    """Settings shared by the chat and embedding models; a client per call (the SDK's
    HTTP client belongs to one event loop, and a call is long next to a connect)."""

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
    ):
        if not model:
            raise ConfigurationError("give the model's name, e.g. model='gpt-4o-mini'")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    def _client(self) -> Any:
        openai = _sdk()
        try:
            return openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout_s,
                max_retries=0,
            )
        except openai.OpenAIError as exc:
            raise ConfigurationError(
                f"{type(self).__name__}({self.model!r}): {exc} (give api_key= or set "
                "OPENAI_API_KEY)"
            ) from None

    async def _request(self, call: Any) -> tuple[Any, str | None]:
        openai = _sdk()
        async with self._client() as client:
            try:
                response = await call(client)
            except openai.APIStatusError as exc:
                raise AttemptFailed(
                    exc.status_code,
                    exc.request_id,
                    _error_detail(exc),
                    retry_after(getattr(exc.response, "headers", None)),
                ) from None
            except openai.APITimeoutError:
                raise AttemptFailed(None, None, f"timed out after {self.timeout_s} s") from None
            except openai.APIConnectionError as exc:
                raise AttemptFailed(None, None, f"connection failed: {exc}") from None
        return response, getattr(response, "_request_id", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            return str(message)
    return str(getattr(exc, "message", exc))


def _to_openai(message: dict[str, Any]) -> dict[str, Any]:
    role = message["role"]
    if role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.get("tool_call_id") or "",
            "content": message.get("content") or "",
        }
    converted: dict[str, Any] = {"role": role, "content": message.get("content") or ""}
    calls = message.get("tool_calls") or []
    if role == "assistant" and calls:
        converted["content"] = message.get("content") or None
        converted["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": json.dumps(call.get("arguments") or {}),
                },
            }
            for call in calls
        ]
    return converted


def _arguments(raw: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        return {"_unparsed_arguments": raw}
    return parsed if isinstance(parsed, dict) else {"_unparsed_arguments": raw}


class OpenAIChatModel(_OpenAIClient, ChatModel):
    """A chat model behind the OpenAI chat completions API (or a compatible server).

    Args:
        model: the model's name, e.g. ``gpt-4o-mini``.
        base_url: the API's URL (default: ``OPENAI_BASE_URL``, else OpenAI's).
        api_key: the API key (default: ``OPENAI_API_KEY``); never shown in reprs or logs.
        timeout_s: the timeout of one attempt.
        retry: the retry policy (default :class:`RetryPolicy`).
        max_iterations: default limit of model calls per chat request.
        native_output_schema: pass a request's output schema as ``response_format``
            (servers without structured output: False, the schema is then only in the
            prompt).
        **options: default parameters of every call (temperature, max_tokens, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        max_iterations: int = 10,
        native_output_schema: bool = True,
        **options: Any,
    ):
        super().__init__(model, base_url, api_key, timeout_s, retry)
        self.max_iterations = max_iterations
        self.native_output_schema = native_output_schema
        self.options = options

    async def chat_once(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        output_schema: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        params: dict[str, Any] = {**self.options, **options}
        if tools:
            params["tools"] = tools
        if output_schema is not None and self.native_output_schema:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": output_schema},
            }
        sent = [_to_openai(m) for m in messages]
        response, request_id = await self._request(
            lambda client: client.chat.completions.create(model=self.model, messages=sent, **params)
        )
        if not response.choices:
            raise AttemptFailed(200, request_id, "the response has no choices")
        choice = response.choices[0].message
        calls = [
            {
                "id": call.id,
                "name": call.function.name,
                "arguments": _arguments(call.function.arguments),
            }
            for call in (choice.tool_calls or [])
        ]
        usage = response.usage
        return {
            "message": {"role": "assistant", "content": choice.content or "", "tool_calls": calls},
            "usage": {
                "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
            },
            "request_id": request_id,
            "model": str(response.model or self.model),
        }


class OpenAIEmbeddingModel(_OpenAIClient):
    """Embeddings from the OpenAI embeddings API (or a compatible server).

    Args:
        model: the model's name, e.g. ``text-embedding-3-small``.
        base_url, api_key, timeout_s, retry: as for :class:`OpenAIChatModel`.
        dimensions: ask for vectors of this size (models that support it).
    """

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        dimensions: int | None = None,
    ):
        super().__init__(model, base_url, api_key, timeout_s, retry)
        self.dimensions = dimensions

    async def embed_once(self, texts: list[str]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.dimensions is not None:
            params["dimensions"] = self.dimensions
        response, request_id = await self._request(
            lambda client: client.embeddings.create(model=self.model, input=texts, **params)
        )
        vectors = [list(map(float, item.embedding)) for item in response.data]
        if len(vectors) != len(texts):
            raise AttemptFailed(200, request_id, f"{len(vectors)} vectors for {len(texts)} texts")
        usage = response.usage
        return {
            "vectors": vectors,
            "usage": {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0)},
            "request_id": request_id,
            "model": self.model,
        }

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Vectors of ``texts`` (``{"vectors": [[float]], ...}``) under the retry policy."""
        return await retrying(self.model, self.retry, lambda: self.embed_once(list(texts)))
