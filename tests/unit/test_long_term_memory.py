"""Long-term memory: scoped to the key, kept in its state, searched by similarity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentstream import Agent, InputEvent, OutputEvent, RunnerContext, action
from agentstream.errors import ConfigurationError
from agentstream.llm import LongTermMemoryConfig, OpenAIEmbeddingModel
from agentstream.testing import (
    LocalRunner,
    ScriptedChatServer,
)


class Notes(Agent):
    """Inputs: {"add": text, "meta": {...}} | {"search": query} | {"get": id} | {"delete": id}."""

    @action(InputEvent)
    async def handle(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.long_term_memory
        request: dict[str, Any] = event.input
        if "add" in request:
            result: Any = await memory.add(request["add"], request.get("meta"))
        elif "search" in request:
            found = await memory.search(request["search"], limit=request.get("limit", 5))
            result = [[item.id, item.text, item.metadata, round(item.score, 3)] for item in found]
        elif "get" in request:
            item = await memory.get(request["get"])
            result = None if item is None else [item.id, item.text]
        else:
            result = await memory.delete(request["delete"])
        ctx.send_event(OutputEvent(output=result))


@pytest.fixture
def server() -> Iterator[ScriptedChatServer]:
    with ScriptedChatServer() as running:
        yield running


def agent(server: ScriptedChatServer, resource: str = "embedding_model") -> Notes:
    embeddings = OpenAIEmbeddingModel(
        "text-embedding-3-small", base_url=server.openai_url, api_key="t"
    )
    return Notes().add_resource(resource, embeddings)  # type: ignore[return-value]


def values(outputs: list[tuple[Any, Any]]) -> list[Any]:
    return [value for _, value in outputs]


def test_add_search_get_delete(server: ScriptedChatServer) -> None:
    runner = LocalRunner(agent(server), always_replay=True)
    ids = values(
        runner.run(
            [
                ("ann", {"add": "ann prefers tea over coffee", "meta": {"kind": "taste"}}),
                ("ann", {"add": "ann lives in oslo"}),
                ("ann", {"add": "ann has a dog called rex"}),
            ]
        )
    )
    assert ids == ["m0", "m1", "m2"]
    (found,) = values(runner.run([("ann", {"search": "does ann like tea or coffee", "limit": 2})]))
    assert found[0][0] == "m0"
    assert found[0][2] == {"kind": "taste"}
    assert found[0][3] >= found[1][3]
    assert values(runner.run([("ann", {"get": "m1"})])) == [["m1", "ann lives in oslo"]]
    assert values(runner.run([("ann", {"delete": "m1"}), ("ann", {"get": "m1"})])) == [True, None]
    assert values(runner.run([("ann", {"delete": "m1"})])) == [False]
    (after,) = values(runner.run([("ann", {"search": "oslo"})]))
    assert [f[0] for f in after] == ["m0", "m2"]
    assert server.count("embeddings") == 3 + 2  # adds and searches, none by the replays


def test_keys_do_not_see_each_others_items(server: ScriptedChatServer) -> None:
    runner = LocalRunner(agent(server))
    runner.run([("ann", {"add": "secret of ann"}), ("bob", {"add": "bob likes jazz"})])
    (bob_sees,) = values(runner.run([("bob", {"search": "secret of ann"})]))
    assert [f[1] for f in bob_sees] == ["bob likes jazz"]
    assert values(runner.run([("bob", {"get": "m1"})])) == [None]


def test_embedding_model_by_config(server: ScriptedChatServer) -> None:
    notes = agent(server, resource="embedder")
    runner = LocalRunner(notes, error_policy="collect")
    runner.run([("k", {"add": "x"})])
    assert isinstance(runner.errors[0].cause, ConfigurationError)
    notes.add_resource(
        "long_term_memory", LongTermMemoryConfig(embedding_model="embedder", max_items=2)
    )
    runner = LocalRunner(notes)
    runner.run([("k", {"add": f"item {i}"}) for i in range(3)])
    (found,) = values(runner.run([("k", {"search": "item"})]))
    assert sorted(f[0] for f in found) == ["m1", "m2"]  # the oldest went
