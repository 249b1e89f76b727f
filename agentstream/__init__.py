"""agentstream: Kafka-native event-driven AI agents with Flink Agents' semantics.

Errors (all under :class:`AgentStreamError`, see :mod:`agentstream.errors`)::

    AgentStreamError
     ├── ConfigurationError
     ├── SerializationError
     ├── ContextThreadError
     ├── ActionExecutionError
     │    ├── NonDeterministicActionError
     │    ├── ActionTimeoutError, EventLimitError, EventSendError,
     │    │   UnhandledEventError (agentstream.errors)
     ├── DurableExecutionError
     ├── BrokerError
     └── StateStoreError (agentstream.errors)
"""

from typing import Any

from agentstream.api import (
    Action,
    Agent,
    Event,
    InputEvent,
    MemoryObject,
    OutputEvent,
    RunnerContext,
    action,
)
from agentstream.errors import (
    ActionExecutionError,
    AgentStreamError,
    BrokerError,
    ConfigurationError,
    ContextThreadError,
    DurableExecutionError,
    NonDeterministicActionError,
    SerializationError,
)

__all__ = [
    "Action",
    "ActionExecutionError",
    "Agent",
    "AgentApp",
    "AgentStreamError",
    "BrokerError",
    "ConfigurationError",
    "ContextThreadError",
    "DurableExecutionError",
    "Event",
    "InputEvent",
    "MemoryObject",
    "NonDeterministicActionError",
    "OutputEvent",
    "RunnerContext",
    "SerializationError",
    "action",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The service layer (aiokafka, rocksdict) loads only when AgentApp is asked for.
    if name == "AgentApp":
        from agentstream.service.app import AgentApp

        return AgentApp
    raise AttributeError(f"module 'agentstream' has no attribute {name!r}")
