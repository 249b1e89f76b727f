"""A shared knowledge base: QdrantVectorStore (local mode) and durable retrieval."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.llm import OpenAIEmbeddingModel, QdrantVectorStore, VectorStore, retrieve
from agentstream.testing import InMemoryActionStateStore, LocalRunner, ScriptedChatServer

FAQ = [
    "refunds are paid back within five days",
    "we ship tea to norway and sweden",
    "green tea should steep for two minutes",
]


class Helpdesk(Agent):
    @action(InputEvent)
    async def answer(event: InputEvent, ctx: RunnerContext) -> None:
        passages = await retrieve(ctx, "kb", event.input, limit=2)
        ctx.send_event(OutputEvent(output=[p.text for p in passages]))


@pytest.fixture
def server() -> Iterator[ScriptedChatServer]:
    with ScriptedChatServer() as running:
        yield running


def store(server: ScriptedChatServer, path: Path | None = None) -> QdrantVectorStore:
    embeddings = OpenAIEmbeddingModel(base_url=server.openai_url, api_key="k")
    return QdrantVectorStore("faq", embeddings, path=str(path) if path else None)


def test_add_search_delete_with_metadata(server: ScriptedChatServer, tmp_path: Path) -> None:
    kb = store(server, tmp_path / "kb")
    assert isinstance(kb, VectorStore)
    try:

        async def scenario() -> None:
            ids = await kb.add(FAQ, [{"topic": "money"}, {"topic": "shipping"}, {"topic": "tea"}])
            assert len(ids) == 3
            found = await kb.search("how long should green tea steep", limit=2)
            assert found[0]["text"] == FAQ[2] and found[0]["metadata"] == {"topic": "tea"}
            assert found[0]["score"] >= found[1]["score"]
            only = await kb.search("tea", limit=3, where={"topic": "shipping"})
            assert [f["text"] for f in only] == [FAQ[1]]
            await kb.delete([ids[2]])
            assert FAQ[2] not in [f["text"] for f in await kb.search("green tea steep")]

        asyncio.run(scenario())
    finally:
        kb.close()
    reopened = store(server, tmp_path / "kb")  # local mode keeps it on disk
    try:
        texts = asyncio.run(reopened.search("refunds", limit=5))
        assert {f["text"] for f in texts} == set(FAQ[:2])
    finally:
        reopened.close()


def test_retrieval_is_durable(server: ScriptedChatServer) -> None:
    """Scenario: an action retrieves passages; the knowledge base then changes and the input
    is run again over the same records.
    We expect: the replay returns the recorded passages without embedding or searching."""
    kb = store(server)
    try:
        asyncio.run(kb.add(FAQ, ids=["refunds", "shipping", "steeping"]))
        agent = Helpdesk().add_resource("kb", kb)
        records = InMemoryActionStateStore()
        outputs = LocalRunner(agent, records).run([("ann", "when are refunds paid back")])
        assert outputs[0][1][0] == FAQ[0]
        asyncio.run(kb.delete(["refunds"]))
        made = server.count()
        assert LocalRunner(agent, records).run([("ann", "when are refunds paid back")]) == outputs
        assert server.count() == made
    finally:
        kb.close()
