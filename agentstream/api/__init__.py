"""The api layer: what agent authors import (no Kafka, no Faust)."""

from agentstream.api.agent import Action, Agent, action
from agentstream.api.context import MemoryObject, Reconciler, RunnerContext
from agentstream.api.events import Event, InputEvent, OutputEvent

__all__ = [
    "Action",
    "Agent",
    "Event",
    "InputEvent",
    "MemoryObject",
    "OutputEvent",
    "Reconciler",
    "RunnerContext",
    "action",
]
