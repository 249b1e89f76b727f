"""Tools: JSON schemas from signatures and docstrings, argument validation, registration."""

from __future__ import annotations

import pytest

from agentstream import Agent, ConfigurationError
from agentstream.llm import Tool, tool
from agentstream.llm.tools import ToolArgumentsError, as_tool


@tool
def lookup_order(order_id: str, include_items: bool = False) -> dict:
    """Look an order up by its id.

    Args:
        order_id: the order's id, e.g. "A-17".
        include_items: also list the order's items.

    Returns:
        The order.
    """
    return {"id": order_id, "items": [] if include_items else None}


def test_schema_comes_from_signature_and_docstring() -> None:
    schema = lookup_order.schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "lookup_order"
    assert function["description"] == "Look an order up by its id."
    params = function["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["order_id"]
    assert params["properties"]["order_id"]["type"] == "string"
    assert params["properties"]["order_id"]["description"] == 'the order\'s id, e.g. "A-17".'
    assert params["properties"]["include_items"]["type"] == "boolean"
    assert params["properties"]["include_items"]["default"] is False
    assert params["additionalProperties"] is False


def test_arguments_are_validated_and_coerced() -> None:
    @tool
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert add.validate({"a": "2"}) == {"a": 2, "b": 1}
    with pytest.raises(ToolArgumentsError, match="add"):
        add.validate({"b": 3})
    with pytest.raises(ToolArgumentsError):
        add.validate({"a": 1, "c": 2})
    assert add(2, 3) == 5  # a tool is still callable as the function


def test_async_tools_and_options() -> None:
    @tool(name="search-docs", description="Search the docs.")
    async def search(query: str) -> list[str]:
        return [query]

    assert isinstance(search, Tool)
    assert search.is_async
    assert search.name == "search-docs"
    assert search.schema()["function"]["description"] == "Search the docs."


def test_tools_register_on_agents() -> None:
    class Support(Agent):
        lookup = lookup_order

    agent = Support()
    assert agent.get_resource("lookup_order") is lookup_order

    def plain_function(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    agent.add_tool(plain_function)
    converted = as_tool(agent.get_resource("plain_function"))
    assert converted.schema()["function"]["description"] == "The weather in a city."
    assert as_tool(plain_function) is converted  # converted once


def test_bad_tools_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        Tool(lambda: None, name="has space")
    with pytest.raises(ConfigurationError):
        Agent().add_tool(42)
