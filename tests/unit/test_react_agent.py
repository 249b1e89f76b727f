"""ReActAgent: InputEvent -> the tool-calling loop -> OutputEvent, with an output schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from agentstream.agents import ReActAgent
from agentstream.llm import OpenAIChatModel, OutputValidationError, RetryPolicy
from agentstream.testing import (
    InMemoryActionStateStore,
    LocalRunner,
    ScriptedChatServer,
    ScriptedReply,
)

CALLS: list[str] = []


def get_weather(city: str) -> dict:
    """The current weather in a city.

    Args:
        city: the city's name.
    """
    CALLS.append(city)
    return {"city": city, "celsius": 21}


class Forecast(BaseModel):
    city: str
    celsius: int


@pytest.fixture
def server() -> Iterator[ScriptedChatServer]:
    CALLS.clear()
    with ScriptedChatServer() as running:
        yield running


def model(server: ScriptedChatServer) -> OpenAIChatModel:
    return OpenAIChatModel(
        "gpt-4o-mini",
        base_url=server.openai_url,
        api_key="test",
        retry=RetryPolicy(initial_backoff_s=0.001),
    )


def test_react_agent_answers_with_text(server: ScriptedChatServer) -> None:
    server.add(
        ScriptedReply.tools(("get_weather", {"city": "Oslo"})),
        ScriptedReply.text("It is 21 degrees in Oslo."),
    )
    agent = ReActAgent(model(server), tools=[get_weather], prompt="You report the weather.")
    store = InMemoryActionStateStore()
    outputs = LocalRunner(agent, store, always_replay=True).run([("u1", "Weather in Oslo?")])
    assert outputs == [("u1", "It is 21 degrees in Oslo.")]
    first = server.requests[0].body
    assert first["messages"][0] == {"role": "system", "content": "You report the weather."}
    assert first["messages"][1] == {"role": "user", "content": "Weather in Oslo?"}
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert CALLS == ["Oslo"]
    # a new runner over the same records replays the whole loop: no request, no tool call
    again = ReActAgent(model(server), tools=[get_weather], prompt="You report the weather.")
    assert LocalRunner(again, store).run([("u1", "Weather in Oslo?")]) == outputs
    assert server.count() == 2 and CALLS == ["Oslo"]


def test_output_schema_is_validated_and_corrected(server: ScriptedChatServer) -> None:
    server.add(
        ScriptedReply.tools(("get_weather", {"city": "Rome"})),
        ScriptedReply.text("It is warm in Rome"),  # not JSON: the agent asks again
        ScriptedReply.text('```json\n{"city": "Rome", "celsius": 21}\n```'),
    )
    agent = ReActAgent(model(server), tools=[get_weather], output_schema=Forecast)
    outputs = LocalRunner(agent).run([("u1", {"question": "Rome?"})])
    assert outputs == [("u1", Forecast(city="Rome", celsius=21))]
    last = server.requests[2].body
    assert "does not follow the JSON schema" in last["messages"][-1]["content"]
    assert last["response_format"]["json_schema"]["schema"]["required"] == ["city", "celsius"]
    assert json.loads(server.requests[0].body["messages"][1]["content"]) == {"question": "Rome?"}
    assert "JSON schema" in server.requests[0].body["messages"][0]["content"]


def test_output_schema_failure_goes_through_the_error_policy(server: ScriptedChatServer) -> None:
    server.responder = lambda request: ScriptedReply.text("no idea")
    agent = ReActAgent(model(server), output_schema=Forecast, max_iterations=3)
    runner = LocalRunner(agent, error_policy="collect")
    assert runner.run([("u1", "?")]) == []
    assert server.count() == 3
    (error,) = runner.errors
    assert isinstance(error.cause, OutputValidationError)
    assert "max_iterations=3" in str(error) and "Forecast" in str(error)


def test_model_by_resource_name(server: ScriptedChatServer) -> None:
    server.add(ScriptedReply.text("hi"))
    agent = ReActAgent("llm", name="greeter")
    agent.add_resource("llm", model(server))
    assert agent.name == "greeter"
    assert LocalRunner(agent).run([("k", "hello")]) == [("k", "hi")]
