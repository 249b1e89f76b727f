"""The runtime layer: the keyed event-processing operator, broker-agnostic."""

from agentstream.runtime.action_state import (
    ActionRun,
    ActionState,
    ActionStateStore,
    CallRecord,
    InMemoryActionStateStore,
)
from agentstream.runtime.operator import ErrorHandler, EventRouter, Operator, OutputSink
from agentstream.runtime.records import InMemoryKeyState, InputRecord, KeyRecord, KeyStateBackend

__all__ = [
    "ActionRun",
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
