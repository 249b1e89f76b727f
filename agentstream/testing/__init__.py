"""Testing agents without Kafka: the in-process runner and a scripted model server.

    from agentstream.testing import LocalRunner
    runner = LocalRunner(Greeter())
    runner.run([("k1", "ann"), ("k2", "bob")])  # -> [("k1", "hello ann"), ("k2", ...)]

:class:`ScriptedChatServer` (an HTTP server speaking the OpenAI and Anthropic APIs, for
testing agents offline) is imported on first use: it needs aiohttp, and the cycle collector
of a process that never uses it should not scan it (a bigger heap makes every collection,
and so every input of a benchmark, dearer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentstream.testing._runner import (
    InMemoryActionStateStore,
    InMemoryKeyState,
    InputRecord,
    LocalRunner,
)

if TYPE_CHECKING:
    from agentstream.testing.scripted_server import (
        ScriptedChatServer,
        ScriptedReply,
        ScriptedRequest,
    )

__all__ = [
    "InMemoryActionStateStore",
    "InMemoryKeyState",
    "InputRecord",
    "LocalRunner",
    "ScriptedChatServer",
    "ScriptedReply",
    "ScriptedRequest",
]

_LAZY = ("ScriptedChatServer", "ScriptedReply", "ScriptedRequest")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agentstream.testing import scripted_server

        return getattr(scripted_server, name)
    raise AttributeError(f"module 'agentstream.testing' has no attribute {name!r}")
