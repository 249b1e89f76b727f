"""Embedding models: the resource long-term memory and vector search use.

An embedding model has ``model`` (its name) and ``async embed(texts) -> {"vectors": ...}``
(plain data, what a durable call records); :class:`~agentstream.llm.OpenAIEmbeddingModel`
is the one shipped.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Protocol, runtime_checkable

from agentstream.api.context import RunnerContext
from agentstream.llm._probe import LATENCY_BUCKETS, Probe, saved_by_replay
from agentstream.llm.errors import ChatModelError

__all__ = ["EmbeddingModel", "cosine", "embed_durably", "normalize"]


@runtime_checkable
class EmbeddingModel(Protocol):
    """What an embedding model resource provides."""

    model: str

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """``{"vectors": [[float, ...], ...], "usage": {...}}``, one vector per text."""
        ...


async def _embed(
    model: EmbeddingModel, probe: Probe, resource: str, texts: list[str]
) -> dict[str, Any]:
    probe.called = True
    group = probe.group.sub_group("model", model.model)
    started = time.perf_counter()
    try:
        result = await model.embed(texts)
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
    return {"vectors": result["vectors"]}


async def embed_durably(ctx: RunnerContext, resource: str, texts: list[str]) -> list[list[float]]:
    """Vectors of ``texts`` from the embedding model resource ``resource``, as a durable
    call (a replay is answered from the record)."""
    model = ctx.get_resource(resource)
    if not isinstance(model, EmbeddingModel):
        raise TypeError(
            f"resource {resource!r} is a {type(model).__name__}, not an embedding model"
        )
    probe = Probe(ctx.action_metric_group)
    result: dict[str, Any] = await ctx.durable_execute_async(
        functools.partial(_embed, model, probe), resource, list(texts)
    )
    if not probe.called:
        saved_by_replay(ctx, "model")
    return [list(v) for v in result["vectors"]]


def normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors (0 when either is zero or sizes differ)."""
    if len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0
