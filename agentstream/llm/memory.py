"""Long-term memory: ``ctx.long_term_memory``, a key's items searched by similarity.

Items live in the key's short-term memory under ``_agentstream_ltm`` (one entry per item,
so adding one never rewrites the others): they are in the key's state, changelogged, move
with the key, survive crashes, and replay like any memory write. Embeddings come from an
embedding model resource through durable calls. Items of one key are invisible to others.

Which embedding model: the resource named by a :class:`LongTermMemoryConfig` registered as
``"long_term_memory"``, else the first of ``"embedding_model"``, ``"embedding"``,
``"embeddings"`` that exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from agentstream.api.context import RunnerContext
from agentstream.errors import ConfigurationError
from agentstream.llm.embeddings import cosine, embed_durably, normalize

__all__ = ["LongTermMemory", "LongTermMemoryConfig", "MemoryItem"]

_ROOT = "_agentstream_ltm"
_ITEMS = f"{_ROOT}.items"
_NEXT = f"{_ROOT}.next"
_DEFAULT_NAMES = ("embedding_model", "embedding", "embeddings")


@dataclass(frozen=True)
class LongTermMemoryConfig:
    """Settings of long-term memory, registered as the resource ``"long_term_memory"``.

    Attributes:
        embedding_model: the embedding model resource's name.
        max_items: the most items a key keeps (the oldest go first); None: no limit.
    """

    embedding_model: str = "embedding_model"
    max_items: int | None = None


class MemoryItem(BaseModel):
    """One item of long-term memory; ``score`` is set by :meth:`LongTermMemory.search`."""

    id: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    score: float | None = None


class LongTermMemory:
    """A key's long-term memory (what ``ctx.long_term_memory`` returns). All methods are
    coroutines: ``await ctx.long_term_memory.add("likes tea")``."""

    def __init__(self, ctx: RunnerContext):
        self._ctx = ctx

    def _config(self) -> LongTermMemoryConfig:
        try:
            config = self._ctx.get_resource("long_term_memory")
        except KeyError:
            config = None
        if isinstance(config, LongTermMemoryConfig):
            return config
        for name in _DEFAULT_NAMES:
            try:
                self._ctx.get_resource(name)
            except KeyError:
                continue
            return LongTermMemoryConfig(embedding_model=name)
        raise ConfigurationError(
            "long-term memory needs an embedding model: add_resource('embedding_model', "
            "OpenAIEmbeddingModel(...)) or add_resource('long_term_memory', "
            "LongTermMemoryConfig(embedding_model=<resource name>))"
        )

    def _items(self) -> dict[str, dict[str, Any]]:
        items = self._ctx.short_term_memory.get(_ITEMS)
        if items is None:
            return {}
        fields = items.get_fields()
        return {k: v for k, v in fields.items() if isinstance(v, dict)}

    async def add(self, text: str, metadata: dict[str, Any] | None = None) -> str:
        """Keep ``text`` (with ``metadata``); returns the new item's id."""
        if not isinstance(text, str) or not text:
            raise ValueError("long-term memory items are non-empty strings")
        config = self._config()
        (vector,) = await embed_durably(self._ctx, config.embedding_model, [text])
        memory = self._ctx.short_term_memory
        number = int(memory.get(_NEXT) or 0)
        item_id = f"m{number}"
        memory.set(_NEXT, number + 1)
        memory.set(
            f"{_ITEMS}.{item_id}",
            {"text": text, "metadata": dict(metadata or {}), "vector": normalize(vector)},
        )
        if config.max_items is not None:
            items = self._items()
            excess = len(items) - config.max_items
            for old in sorted(items, key=lambda i: int(i[1:]))[: max(excess, 0)]:
                memory.set(f"{_ITEMS}.{old}", None)
        return item_id

    async def search(self, query: str, limit: int = 5) -> list[MemoryItem]:
        """The ``limit`` items most similar to ``query``, best first (with scores)."""
        items = self._items()
        if not items or limit <= 0:
            return []
        config = self._config()
        (vector,) = await embed_durably(self._ctx, config.embedding_model, [query])
        scored = [
            (cosine(vector, item["vector"]), int(item_id[1:]), item_id, item)
            for item_id, item in items.items()
        ]
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [
            MemoryItem(id=item_id, text=item["text"], metadata=item["metadata"], score=score)
            for score, _, item_id, item in scored[:limit]
        ]

    async def get(self, item_id: str) -> MemoryItem | None:
        """The item ``item_id``, or None."""
        item = self._items().get(item_id)
        if item is None:
            return None
        return MemoryItem(id=item_id, text=item["text"], metadata=item["metadata"])

    async def delete(self, item_id: str) -> bool:
        """Forget item ``item_id``; whether it existed."""
        if item_id not in self._items():
            return False
        self._ctx.short_term_memory.set(f"{_ITEMS}.{item_id}", None)
        return True

    async def all(self) -> list[MemoryItem]:
        """Every item, oldest first."""
        items = self._items()
        return [
            MemoryItem(id=i, text=items[i]["text"], metadata=items[i]["metadata"])
            for i in sorted(items, key=lambda i: int(i[1:]))
        ]
