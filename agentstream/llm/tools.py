"""Tools: plain functions (sync or async) a chat model may call.

A tool's JSON schema comes from its signature (pydantic validates and coerces the
arguments) and its Google-style docstring (the first paragraph describes the tool, the
``Args:`` section each parameter)::

    @tool
    def lookup_order(order_id: str) -> dict:
        \"\"\"Look an order up by its id.

        Args:
            order_id: the order's id, e.g. "A-17".
        \"\"\"

In an :class:`~agentstream.Agent` class body ``@tool`` registers the tool as a resource
named after the function; ``agent.add_tool(fn)`` does the same for any function.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
import weakref
from collections.abc import Callable
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from agentstream.errors import ConfigurationError

__all__ = ["Tool", "ToolArgumentsError", "as_tool", "result_text", "tool"]


class ToolArgumentsError(ValueError):
    """The model called a tool with arguments that do not fit its schema."""


_ARG_LINE = re.compile(r"^\s{2,}(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) of a Google-style docstring."""
    text = inspect.cleandoc(doc or "")
    description = text.split("\n\n", 1)[0].strip()
    params: dict[str, str] = {}
    section = False
    current: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section, current = True, None
            continue
        if not section:
            continue
        if stripped.endswith(":") and not line.startswith(" "):
            break  # the next section (Returns:, Raises:)
        match = _ARG_LINE.match("  " + line if not line.startswith(" ") else line)
        indent = len(line) - len(line.lstrip())
        if match and indent <= 4:
            current = match.group(1).lstrip("*")
            params[current] = match.group(2).strip()
        elif current and stripped:
            params[current] = f"{params[current]} {stripped}".strip()
    return description, params


class Tool:
    """A function a chat model may call, with its name, description and JSON schema.

    Args:
        fn: the function (sync or ``async def``); its parameters must be annotated or have
            defaults; ``ctx``-style runtime objects are not passed to tools.
        name: the name the model sees (default: the function's name).
        description: what the tool does (default: the docstring's first paragraph).
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None):  # fmt: skip
        if not callable(fn):
            raise ConfigurationError(f"a tool must be callable, got {fn!r}")
        self.fn = fn
        self.name: str = name or getattr(fn, "__name__", "") or type(fn).__name__
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.name):
            raise ConfigurationError(
                f"tool name {self.name!r}: use 1-64 letters, digits, '_' or '-'"
            )
        doc_description, param_docs = _parse_docstring(inspect.getdoc(fn) or "")
        self.description: str = description or doc_description or self.name
        self.arguments_model: type[BaseModel] = self._arguments_model(param_docs)
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        self.parameters: dict[str, Any] = schema
        self.is_async = inspect.iscoroutinefunction(fn)

    @property
    def tool_name(self) -> str:
        return self.name

    def _arguments_model(self, docs: dict[str, str]) -> type[BaseModel]:
        try:
            signature = inspect.signature(self.fn)
            hints = get_type_hints(self.fn)
        except (TypeError, ValueError, NameError) as exc:
            raise ConfigurationError(
                f"tool {self.name!r}: cannot read its signature: {exc}"
            ) from exc
        fields: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(param.name, Any)
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (annotation, Field(default, description=docs.get(param.name)))
        model = create_model(
            f"{self.name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        return model

    def schema(self) -> dict[str, Any]:
        """The tool in OpenAI's function-tool format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments validated and coerced by the schema (ToolArgumentsError if not)."""
        try:
            parsed = self.arguments_model.model_validate(arguments or {})
        except ValidationError as exc:
            raise ToolArgumentsError(
                f"tool {self.name!r} called with invalid arguments: {exc}"
            ) from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __agent_install__(self, agent: Any, attr: str) -> None:
        """``@tool`` in an Agent class body: register the tool on the agent."""
        agent.add_tool(self, name=self.name)

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


@overload
def tool(fn: Callable[..., Any]) -> Tool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make ``fn`` a :class:`Tool`: ``@tool`` or ``@tool(name=..., description=...)``."""
    if fn is not None:
        return Tool(fn, name=name, description=description)
    return lambda f: Tool(f, name=name, description=description)


_converted: weakref.WeakKeyDictionary[Any, Tool] = weakref.WeakKeyDictionary()


def as_tool(value: Any, name: str | None = None) -> Tool:
    """``value`` as a :class:`Tool` (a plain function is converted once)."""
    if isinstance(value, Tool):
        return value
    try:
        found = _converted.get(value)
    except TypeError:
        found = None
    if found is None or (name and found.name != name):
        found = Tool(value, name=name)
        with contextlib.suppress(TypeError):  # not weak-referenceable: convert each time
            _converted[value] = found
    return found


def result_text(result: Any) -> str:
    """A tool result as the text a model is given: strings as they are, else JSON."""
    if isinstance(result, str):
        return result
    return json.dumps(to_jsonable_python(result), ensure_ascii=False, default=str)


def plain(value: Any) -> Any:
    """``value`` as JSON-like plain data (how tool results are recorded)."""
    return to_jsonable_python(value, fallback=str)
