"""The error hierarchy of agentstream.

::

    AgentStreamError
     ├── ConfigurationError          bad settings, bad agent definition
     ├── SerializationError          an event or memory value that cannot be serialized
     ├── ContextThreadError          RunnerContext or memory used off the event loop's thread
     ├── ActionExecutionError        an action raised (key, action, event id, seq, cause)
 │    └── NonDeterministicActionError  it behaved differently on replay
     ├── DurableExecutionError       a durable call's recorded failure, re-raised on replay
         └── BrokerError                 the Kafka side failed (translated from aiokafka)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActionExecutionError",
    "AgentStreamError",
    "BrokerError",
    "ConfigurationError",
    "ContextThreadError",
    "DurableExecutionError",
    "NonDeterministicActionError",
    "SerializationError",
]


class AgentStreamError(Exception):
    """Root of every error agentstream raises."""


class ConfigurationError(AgentStreamError):
    """A setting or an agent definition is invalid."""


class SerializationError(AgentStreamError, TypeError):
    """A value that must be serialized (event, memory value, durable result) cannot be."""


class ContextThreadError(AgentStreamError, RuntimeError):
    """The runner context or a memory object was used from a thread other than the loop's."""


class BrokerError(AgentStreamError):
    """The Kafka client failed; the original error is the ``__cause__``."""


class ActionExecutionError(AgentStreamError):
    """An action raised while processing an event.

    Attributes:
        key: the record key being processed.
        action: the action's name.
        event_id: the id of the event that triggered the action.
        seq: the key's sequence number of the input being processed.
        cause: the exception the action raised.
    """

    def __init__(self, key: Any, action: str, event_id: str, seq: int, cause: BaseException):
        self.key = key
        self.action = action
        self.event_id = event_id
        self.seq = seq
        self.cause = cause
        super().__init__(
            f"action {action!r} failed on key {key!r} (seq {seq}, event {event_id}): "
            f"{type(cause).__name__}: {cause}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.action, self.event_id, self.seq, self.cause))


class DurableExecutionError(AgentStreamError):
    """A durable call failed; on replay the recorded failure is raised again.

    Attributes:
        original_type: qualified name of the exception type the call raised.
        original_message: its message.
    """

    def __init__(self, original_type: str, original_message: str):
        self.original_type = original_type
        self.original_message = original_message
        super().__init__(f"durable call failed with {original_type}: {original_message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.original_type, self.original_message))


class NonDeterministicActionError(ActionExecutionError):
    """An action behaved differently when replayed for the same input.

    Raised by the "always replay" harness: ``detail`` says what differed (sent events,
    memory updates or durable calls).
    """

    def __init__(self, key: Any, action: str, event_id: str, seq: int, detail: str):
        self.detail = detail
        super().__init__(key, action, event_id, seq, RuntimeError(f"non-deterministic: {detail}"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.action, self.event_id, self.seq, self.detail))
