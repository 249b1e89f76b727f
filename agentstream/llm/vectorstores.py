"""Vector stores: a shared, read-mostly knowledge base for retrieval, behind a small protocol.

Long-term memory is per key and lives in the key's state; a knowledge base is shared by
every key and lives outside (a vector database). An action retrieves from it with
:func:`retrieve`, a durable call, so a replay gets the same passages without searching
again (even if the knowledge base changed in between)::

    kb = QdrantVectorStore("faq", OpenAIEmbeddingModel(...), path="./kb")
    await kb.add(["Refunds take 5 days.", "We ship to Norway."])
    agent.add_resource("kb", kb)
    ...
    passages = await retrieve(ctx, "kb", event.input, limit=3)   # in an action

:class:`QdrantVectorStore` is the backend shipped: Qdrant's client in local mode (in memory
or in a directory, no server) or against a Qdrant server (``url``), ``agentstream[qdrant]``.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

from agentstream.api.context import RunnerContext
from agentstream.errors import ConfigurationError
from agentstream.llm._probe import Probe, saved_by_replay
from agentstream.llm.embeddings import EmbeddingModel
from agentstream.llm.memory import MemoryItem

__all__ = ["QdrantVectorStore", "VectorStore", "retrieve"]

T = TypeVar("T")
_ID_NAMESPACE = uuid.UUID("2f4b1c1e-6a55-4c0e-9a0b-6c8a3d8f1e21")


@runtime_checkable
class VectorStore(Protocol):
    """What a vector-store resource provides (all coroutines)."""

    async def add(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Store ``texts`` (embedded by the store's model); returns their ids."""
        ...

    async def search(
        self, query: str, limit: int = 5, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The ``limit`` passages most similar to ``query`` (``{"id", "text", "metadata",
        "score"}``, best first), among those whose metadata equals ``where``."""
        ...

    async def delete(self, ids: Sequence[str]) -> None:
        """Forget the passages ``ids``."""
        ...


def _sdk() -> Any:
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "QdrantVectorStore needs qdrant-client: pip install 'agentstream[qdrant]'"
        ) from exc
    return qdrant_client, models


class QdrantVectorStore:
    """A knowledge base in a Qdrant collection (created on first use).

    Args:
        collection: the collection's name.
        embedding_model: embeds passages and queries (e.g. ``OpenAIEmbeddingModel``).
        path: keep the collection in this directory (Qdrant's local mode); with neither
            ``path`` nor ``url`` it is kept in memory.
        url: a Qdrant server instead.
        api_key: the server's API key (never shown in reprs).
    """

    def __init__(
        self,
        collection: str,
        embedding_model: EmbeddingModel,
        *,
        path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ):
        if path is not None and url is not None:
            raise ConfigurationError("QdrantVectorStore takes path= or url=, not both")
        self.collection = collection
        self.embedding_model = embedding_model
        self.path = path
        self.url = url
        self._api_key = api_key
        self._client: Any = None
        self._size: int | None = None
        # The local client keeps SQLite and numpy state: one thread owns it.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"qdrant-{collection}")

    def __repr__(self) -> str:
        where = self.url or self.path or ":memory:"
        return f"QdrantVectorStore({self.collection!r}, {where!r})"

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args))

    def _open(self, size: int | None) -> Any:
        qdrant_client, models = _sdk()
        if self._client is None:
            if self.url is not None:
                self._client = qdrant_client.QdrantClient(url=self.url, api_key=self._api_key)
            else:
                self._client = qdrant_client.QdrantClient(path=self.path or ":memory:")
        if self._size is None and self._client.collection_exists(self.collection):
            info = self._client.get_collection(self.collection)
            self._size = int(info.config.params.vectors.size)
        if self._size is None and size is not None:
            self._client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE),
            )
            self._size = size
        return self._client

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        result = await self.embedding_model.embed(texts)
        return [list(map(float, v)) for v in result["vectors"]]

    async def add(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        texts = list(texts)
        if not texts:
            return []
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{}] * len(texts)
        names = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in texts]
        if not len(metas) == len(names) == len(texts):
            raise ValueError("add: texts, metadatas and ids differ in length")
        vectors = await self._embed(texts)
        _, models = _sdk()
        points = [
            models.PointStruct(
                id=str(uuid.uuid5(_ID_NAMESPACE, name)),
                vector=vector,
                payload={"id": name, "text": text, "metadata": meta},
            )
            for name, text, meta, vector in zip(names, texts, metas, vectors, strict=True)
        ]

        def upsert() -> None:
            self._open(len(vectors[0])).upsert(self.collection, points=points)

        await self._run(upsert)
        return names

    async def search(
        self, query: str, limit: int = 5, where: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        (vector,) = await self._embed([query])
        _, models = _sdk()
        condition = None
        if where:
            condition = models.Filter(
                must=[
                    models.FieldCondition(key=f"metadata.{k}", match=models.MatchValue(value=v))
                    for k, v in where.items()
                ]
            )

        def query_points() -> list[Any]:
            client = self._open(None)
            if self._size is None:
                return []  # nothing was ever added
            found = client.query_points(
                self.collection, query=vector, limit=limit, query_filter=condition
            )
            return list(found.points)

        points = await self._run(query_points)
        return [
            {
                "id": point.payload["id"],
                "text": point.payload["text"],
                "metadata": point.payload.get("metadata") or {},
                "score": float(point.score),
            }
            for point in points
        ]

    async def delete(self, ids: Sequence[str]) -> None:
        _, models = _sdk()
        selector = models.PointIdsList(points=[str(uuid.uuid5(_ID_NAMESPACE, str(i))) for i in ids])

        def delete() -> None:
            client = self._open(None)
            if self._size is not None:
                client.delete(self.collection, points_selector=selector)

        await self._run(delete)

    def close(self) -> None:
        """Close the client and its thread."""
        client, self._client = self._client, None
        if client is not None:
            self._thread.submit(client.close).result()
        self._thread.shutdown(wait=True)


async def _search(
    store: VectorStore,
    probe: Probe,
    resource: str,
    query: str,
    limit: int,
    where: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    probe.called = True
    found = await store.search(query, limit, where)
    return [
        {
            "id": str(item["id"]),
            "text": str(item["text"]),
            "metadata": dict(item.get("metadata") or {}),
            "score": float(item["score"]),
        }
        for item in found
    ]


async def retrieve(
    ctx: RunnerContext,
    resource: str,
    query: str,
    limit: int = 5,
    where: Mapping[str, Any] | None = None,
) -> list[MemoryItem]:
    """The passages of the vector-store resource ``resource`` most similar to ``query``,
    best first, as a durable call (a replay gets the recorded passages)."""
    store = ctx.get_resource(resource)
    if not isinstance(store, VectorStore):
        raise TypeError(f"resource {resource!r} is a {type(store).__name__}, not a vector store")
    probe = Probe(ctx.action_metric_group)
    found: list[dict[str, Any]] = await ctx.durable_execute_async(
        functools.partial(_search, store, probe),
        resource,
        query,
        limit,
        dict(where) if where else None,
    )
    if not probe.called:
        saved_by_replay(ctx, "model")
    return [MemoryItem.model_validate(item) for item in found]
