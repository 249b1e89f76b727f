"""The operator's ports: what it talks to outside itself (outputs, routed events, errors).

The Kafka worker and the in-process runner each plug their own implementations in; the
operator never knows which.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from agentstream.api.events import Event, OutputEvent
from agentstream.errors import ActionExecutionError
from agentstream.runtime.records import InputRecord

__all__ = ["ErrorHandler", "EventRouter", "FatalHandler", "OutputSink", "Waiting"]


class OutputSink(Protocol):
    """Where OutputEvents go."""

    def emit(
        self, key: Any, event: OutputEvent, record: InputRecord, watermark: int | None
    ) -> Awaitable[None] | None:
        """Deliver one output of ``record``'s input; may return something to await (an
        ``async def`` does), which the key's input then waits for. What it raises (at once
        or when awaited) goes through the error policy as an
        :class:`~agentstream.errors.EventSendError`."""


class EventRouter(Protocol):
    """Carries a non-output event to be processed again (the service's internal topic)."""

    async def route(
        self, key: Any, tag: str, event: Event, packed: bytes, sender: str, record: InputRecord
    ) -> None:
        """Send ``event`` (``packed`` is its :func:`~agentstream.serde.pack_event` form);
        the consumer calls :meth:`Operator.on_routed_event` with it."""


ErrorHandler = Callable[[ActionExecutionError, Event, InputRecord], Awaitable[None]]
"""The error policy: called with each failed step (the service dead-letters it or stops)."""

FatalHandler = Callable[[BaseException], None]
"""Called when a key's runner fails outside any action (the error policy itself, the state
store): the key cannot go on, so the host stops (the worker restarts and resumes it)."""

# What a step of the key runner returns: None when it is done, else what to await first.
Waiting = Awaitable[None] | None
