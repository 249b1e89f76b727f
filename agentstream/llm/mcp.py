"""MCP servers as resources: their tools callable by chat models like local ones.

    agent.add_resource("docs", MCPServer(command=["python", "-m", "docs_server"]))
    ChatRequestEvent(model="llm", tools=["docs"], ...)   # every tool of the server

A request that names an :class:`MCPServer` resource in ``tools`` offers all of its tools.
The listing is a durable call made once per request; each tool call is a durable call too,
so a replay neither lists nor calls again. Prompts: ``await mcp_prompt(ctx, "docs",
"summarize", {...})`` returns :class:`~agentstream.llm.ChatMessage` objects (durably).

Built on the official ``mcp`` SDK (``agentstream[mcp]``), over stdio (``command``) or
Streamable HTTP (``url``). Each listing or call opens its own session (a stdio server is
started for it): simple and safe across event loops, at the cost of a start per call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from agentstream.api.context import RunnerContext
from agentstream.errors import ConfigurationError
from agentstream.llm._probe import Probe, saved_by_replay
from agentstream.llm.errors import LLMError
from agentstream.llm.messages import ChatMessage

__all__ = ["MCPServer", "MCPServerError", "mcp_prompt"]

T = TypeVar("T")


class MCPServerError(LLMError):
    """An MCP server could not be reached, or refused a listing or a prompt."""


def _sdk() -> Any:
    try:
        import mcp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "MCP servers need the mcp SDK: pip install 'agentstream[mcp]'"
        ) from exc
    return mcp


def _text(content: Sequence[Any]) -> str:
    return "\n".join(
        str(getattr(block, "text", "")) for block in content if getattr(block, "type", "") == "text"
    )


class MCPServer:
    """An MCP server whose tools (and prompts) an agent may use.

    Args:
        command: the command that starts the server over stdio, e.g.
            ``["python", "-m", "my_server"]``.
        url: the server's Streamable HTTP URL (instead of ``command``).
        env: extra environment variables of the server process (never shown in reprs).
        cwd: the server process's working directory.
        timeout_s: the timeout of each request to the server.
    """

    def __init__(
        self,
        command: Sequence[str] | None = None,
        *,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout_s: float = 30.0,
    ):
        if (command is None) == (url is None):
            raise ConfigurationError("MCPServer takes command=[...] or url=..., one of them")
        if command is not None and (isinstance(command, str) or not command):
            raise ConfigurationError("MCPServer command is a list: ['python', '-m', 'server']")
        self.command = list(command) if command is not None else None
        self.url = url
        self._env = dict(env) if env else None
        self.cwd = cwd
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        where = f"command={self.command!r}" if self.command else f"url={self.url!r}"
        return f"MCPServer({where})"

    def _client(self) -> Any:
        mcp = _sdk()
        if self.command is not None:
            target: Any = mcp.StdioServerParameters(
                command=self.command[0], args=self.command[1:], env=self._env, cwd=self.cwd
            )
        else:
            target = self.url
        return mcp.Client(target, read_timeout_seconds=self.timeout_s)

    async def _ask(self, what: str, request: Callable[[Any], Awaitable[T]]) -> T:
        """Open a session, make one request; failures as :class:`MCPServerError`."""
        try:
            async with self._client() as client:
                return await request(client)
        except (ConfigurationError, MCPServerError):
            raise
        except Exception as exc:
            raise MCPServerError(f"{self!r}: {what} failed: {type(exc).__name__}: {exc}") from exc

    async def list_tools(self) -> list[dict[str, Any]]:
        """The server's tools in OpenAI's function-tool format."""
        listing = await self._ask("listing tools", lambda client: client.list_tools())
        return [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description or tool.name,
                    "parameters": dict(tool.input_schema or {"type": "object", "properties": {}}),
                },
            }
            for tool in listing.tools
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """``{"ok": True, "result": ...}`` or ``{"ok": False, "error": ...}``."""
        result = await self._ask(
            f"calling tool {name!r}", lambda client: client.call_tool(name, arguments)
        )
        if result.is_error:
            return {"ok": False, "error": _text(result.content) or "the MCP tool failed"}
        structured = result.structured_content
        if isinstance(structured, dict):
            value = structured.get("result", structured) if len(structured) == 1 else structured
            return {"ok": True, "result": value}
        return {"ok": True, "result": _text(result.content)}

    async def list_prompts(self) -> list[dict[str, Any]]:
        """The server's prompts: name, description and argument names."""
        listing = await self._ask("listing prompts", lambda client: client.list_prompts())
        return [
            {
                "name": prompt.name,
                "description": prompt.description or "",
                "arguments": [argument.name for argument in prompt.arguments or []],
            }
            for prompt in listing.prompts
        ]

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The prompt's messages, as ChatMessage dicts."""
        prompt = await self._ask(
            f"getting prompt {name!r}",
            lambda client: client.get_prompt(name, dict(arguments or {})),
        )
        return [
            ChatMessage(role=message.role, content=_text([message.content])).model_dump()
            for message in prompt.messages
        ]


async def _list_mcp_tools(server: MCPServer, probe: Probe, resource: str) -> list[dict[str, Any]]:
    probe.called = True
    return await server.list_tools()


async def _call_mcp_tool(
    server: MCPServer, probe: Probe, resource: str, name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    probe.called = True
    group = probe.group.sub_group("tool", name)
    group.counter("llm_tool_calls", "Tool calls made.").inc()
    try:
        outcome = await server.call_tool(name, arguments)
    except Exception as exc:
        outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not outcome["ok"]:
        group.counter("llm_tool_failures", "Tool calls that raised.").inc()
    return outcome


async def _get_mcp_prompt(
    server: MCPServer, probe: Probe, resource: str, name: str, arguments: dict[str, str]
) -> list[dict[str, Any]]:
    probe.called = True
    return await server.get_prompt(name, arguments)


def _server(ctx: RunnerContext, resource: str) -> MCPServer:
    server = ctx.get_resource(resource)
    if not isinstance(server, MCPServer):
        raise TypeError(f"resource {resource!r} is a {type(server).__name__}, not an MCPServer")
    return server


async def list_tools_durably(ctx: RunnerContext, resource: str) -> list[dict[str, Any]]:
    """The tools of the MCP server resource ``resource``, listed as a durable call."""
    probe = Probe(ctx.action_metric_group)
    tools: list[dict[str, Any]] = await ctx.durable_execute_async(
        functools.partial(_list_mcp_tools, _server(ctx, resource), probe), resource
    )
    if not probe.called:
        saved_by_replay(ctx, "tool")
    return tools


async def call_tool_durably(
    ctx: RunnerContext, resource: str, name: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Call tool ``name`` of the MCP server resource ``resource`` as a durable call."""
    probe = Probe(ctx.action_metric_group)
    outcome: dict[str, Any] = await ctx.durable_execute_async(
        functools.partial(_call_mcp_tool, _server(ctx, resource), probe), resource, name, arguments
    )
    if not probe.called:
        saved_by_replay(ctx, "tool")
    return outcome


async def mcp_prompt(
    ctx: RunnerContext, resource: str, name: str, arguments: dict[str, str] | None = None
) -> list[ChatMessage]:
    """The messages of prompt ``name`` of the MCP server resource ``resource`` (a durable
    call: a replay does not ask the server again)."""
    probe = Probe(ctx.action_metric_group)
    messages: list[dict[str, Any]] = await ctx.durable_execute_async(
        functools.partial(_get_mcp_prompt, _server(ctx, resource), probe),
        resource,
        name,
        dict(arguments or {}),
    )
    return [ChatMessage.model_validate(m) for m in messages]
