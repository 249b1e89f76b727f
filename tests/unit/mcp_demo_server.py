"""A small MCP server (official ``mcp`` SDK, stdio) for the toolkit's MCP tests.

Each tool call appends a line to ``$MCP_EFFECTS`` so that a test counts real calls.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("orders")


def _effect(line: str) -> None:
    path = os.environ.get("MCP_EFFECTS")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@server.tool()
def order_status(order_id: str) -> str:
    """The status of an order."""
    _effect(f"order_status {order_id}")
    return f"{order_id} is in transit"


@server.tool()
def cancel_order(order_id: str) -> str:
    """Cancel an order (fails for shipped ones)."""
    _effect(f"cancel_order {order_id}")
    raise ValueError("already shipped")


@server.prompt()
def apology(customer: str) -> str:
    """An apology prompt."""
    return f"Write a short apology to {customer}."


if __name__ == "__main__":
    server.run("stdio")
