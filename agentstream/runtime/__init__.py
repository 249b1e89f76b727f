"""The runtime layer: the keyed event-processing operator, broker-agnostic."""

from agentstream.runtime.action_state import (
    ActionState,
    ActionStateStore,
    CallRecord,
    InMemoryActionStateStore,
)
from agentstream.runtime.operator import ErrorHandler, EventRouter, Operator, OutputSink
from agentstream.runtime.records import InMemoryKeyState, InputRecord, KeyRecord, KeyStateBackend

__all__ = [
    "ActionState",
    "ActionStateStore",
    "CallRecord",
    "ErrorHandler",
    "EventRouter",
    "InMemoryActionStateStore",
    "InMemoryKeyState",
    "InputRecord",
    "KeyRecord",
    "KeyStateBackend",
    "Operator",
    "OutputSink",
]
