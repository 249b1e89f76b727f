"""ScriptedChatServer speaks the OpenAI and Anthropic APIs to the real SDKs."""

from __future__ import annotations

import asyncio
import math

import anthropic
import openai
import pytest

from agentstream.testing import ScriptedChatServer, ScriptedReply


async def test_openai_chat_tool_calls_and_errors() -> None:
    with ScriptedChatServer(
        ScriptedReply.tools(("f", {"x": 1})), ScriptedReply.failure(418, "teapot")
    ) as server:
        client = openai.AsyncOpenAI(base_url=server.openai_url, api_key="k", max_retries=0)
        async with client:
            first = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi there"}]
            )
            call = first.choices[0].message.tool_calls[0]
            assert (call.function.name, call.function.arguments) == ("f", '{"x": 1}')
            assert first.usage.prompt_tokens == 2
            assert first._request_id == "req_scripted_1"
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="m", messages=[])
            assert caught.value.status_code == 418
            assert caught.value.request_id == "req_scripted_2"
            with pytest.raises(openai.InternalServerError):  # nothing left in the script
                await client.chat.completions.create(model="m", messages=[])
        assert server.count("chat") == 3 and server.remaining == 0


async def test_openai_embeddings_are_deterministic_and_similar_for_shared_words() -> None:
    with ScriptedChatServer(dimensions=32) as server:
        async with openai.AsyncOpenAI(base_url=server.openai_url, api_key="k") as client:
            result = await client.embeddings.create(
                model="e", input=["red apple pie", "red apple", "blue sky"]
            )
    pie, apple, sky = (d.embedding for d in result.data)
    assert len(pie) == 32
    assert math.isclose(sum(x * x for x in pie), 1.0)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(pie, apple) > cos(pie, sky)
    assert server.count("embeddings") == 1


async def test_anthropic_messages_and_delays() -> None:
    with ScriptedChatServer(ScriptedReply.text("hello", delay_s=0.05)) as server:
        async with anthropic.AsyncAnthropic(base_url=server.url, api_key="k") as client:
            started = asyncio.get_running_loop().time()
            message = await client.messages.create(
                model="claude-test",
                max_tokens=10,
                system="be brief",
                messages=[{"role": "user", "content": "hi"}],
            )
            assert asyncio.get_running_loop().time() - started >= 0.05
    assert message.content[0].text == "hello"
    assert message.usage.output_tokens == 1
    request = server.requests[0]
    assert request.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = ScriptedChatServer().url


async def test_shortcuts_and_async_use() -> None:
    async with ScriptedChatServer() as server:
        server.reply_tool_calls(("f", {})).reply_error(503).reply_text("done")
        assert server.remaining == 3
        assert server.base_url == server.openai_url
        async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
            await c.chat.completions.create(model="m", messages=[])
            with pytest.raises(openai.InternalServerError):
                await c.chat.completions.create(model="m", messages=[])
            done = await c.chat.completions.create(model="m", messages=[])
        assert done.choices[0].message.content == "done"
        assert server.request_count == 3
