"""The error hierarchy of agentstream, drawn once.

::

    AgentStreamError                      retriable
     ├── ConfigurationError               no   bad settings, bad agent definition
     ├── SerializationError (TypeError)   no   an event, memory value or call result that
     │                                         cannot be recorded
     ├── ContextThreadError (RuntimeError) no  RunnerContext or memory used off the loop's thread
     ├── ActionExecutionError             no   an input's step failed (key, action, event id, seq)
     │    ├── NonDeterministicActionError no   an action behaved differently on replay
     │    ├── ActionTimeoutError          no   an action ran past its timeout
     │    ├── EventLimitError             no   an input sent more events than allowed (a loop)
     │    ├── UnhandledEventError         no   an event no action listens to (strict runners)
     │    └── EventSendError              yes  an output or routed event could not be sent
     ├── DurableExecutionError            no   a durable call's recorded failure, re-raised
     ├── BrokerError                      yes  the Kafka side failed (translated from aiokafka)
     └── StateStoreError                  no   the local state failed or was misused
          └── PartitionNotAssignedError   no   state of a partition this worker does not own

Every class says in ``retriable`` whether trying the same thing again may succeed
(a broker that was unreachable) or cannot (an action that raised on its input). Each
carries its context as attributes and chains its cause (``raise ... from cause``), so a
traceback shows the user's line.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ActionExecutionError",
    "ActionTimeoutError",
    "AgentStreamError",
    "BrokerError",
    "ConfigurationError",
    "ContextThreadError",
    "DurableExecutionError",
    "EventLimitError",
    "EventSendError",
    "NonDeterministicActionError",
    "PartitionNotAssignedError",
    "SerializationError",
    "StateStoreError",
    "UnhandledEventError",
]


class AgentStreamError(Exception):
    """Root of every error agentstream raises.

    Attributes:
        retriable: True if the same operation may succeed when tried again.
    """

    retriable: bool = False


class ConfigurationError(AgentStreamError):
    """A setting or an agent definition is invalid."""


class SerializationError(AgentStreamError, TypeError):
    """A value that must be serialized (event, memory value, durable result) cannot be."""


class ContextThreadError(AgentStreamError, RuntimeError):
    """The runner context or a memory object was used from a thread other than the loop's."""


class BrokerError(AgentStreamError):
    """The Kafka client failed; the original error is the ``__cause__``.

    Attributes:
        topic: the topic involved, when one was.
    """

    retriable = True

    def __init__(self, message: str, *, topic: str | None = None):
        self.topic = topic
        super().__init__(message)


class StateStoreError(AgentStreamError):
    """The local state failed (RocksDB), or the store is used in a wrong state."""


class PartitionNotAssignedError(StateStoreError, LookupError):
    """State of a partition that is not (or not yet, or no longer) assigned was accessed.

    Attributes:
        partition: the partition.
        topic: the changelog topic.
    """

    def __init__(self, partition: int, topic: str):
        self.partition = partition
        self.topic = topic
        super().__init__(
            f"partition {partition} of the store changelogged to {topic!r} is not assigned; "
            "access state only for partitions passed to assign() and not revoked since"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.partition, self.topic))


class ActionExecutionError(AgentStreamError):
    """A step of an input failed: an action raised (or timed out, looped, or its sends failed).

    The cause is chained (``__cause__``), so the traceback shows the user's line.

    Attributes:
        key: the record key being processed.
        action: the action's name.
        event_id: the id of the event that triggered the action.
        seq: the key's sequence number of the input being processed.
        cause: the exception the action raised.
    """

    reason = "action"  # the dead-letter reason

    def __init__(self, key: Any, action: str, event_id: str, seq: int, cause: BaseException):
        self.key = key
        self.action = action
        self.event_id = event_id
        self.seq = seq
        self.cause = cause
        self.__cause__ = cause
        super().__init__(
            f"action {action!r} failed on key {key!r} (seq {seq}, event {event_id}): "
            f"{type(cause).__name__}: {cause}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.action, self.event_id, self.seq, self.cause))


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


class ActionTimeoutError(ActionExecutionError):
    """An action did not finish within its timeout (``@action(..., timeout=...)`` or the
    ``action_timeout_s`` setting); it was cancelled and its memory writes rolled back.

    Attributes:
        timeout_s: the timeout that passed.
    """

    reason = "timeout"

    def __init__(self, key: Any, action: str, event_id: str, seq: int, timeout_s: float):
        self.timeout_s = timeout_s
        super().__init__(
            key,
            action,
            event_id,
            seq,
            TimeoutError(
                f"action {action!r} did not finish within {timeout_s:g} s; make it faster, "
                f"or raise its limit with @action(..., timeout=...) or the "
                f"action_timeout_s setting"
            ),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.action, self.event_id, self.seq, self.timeout_s))


class EventLimitError(ActionExecutionError):
    """An input made more events than ``max_events_per_input`` allows: most likely actions
    that trigger each other forever (A sends X, X triggers B, B sends Y, Y triggers A).

    Attributes:
        limit: the limit that was passed.
        last_types: the type names of the last events the input made, oldest first.
    """

    reason = "event-limit"

    def __init__(
        self, key: Any, action: str, event_id: str, seq: int, limit: int, last_types: list[str]
    ):
        self.limit = limit
        self.last_types = last_types
        super().__init__(
            key,
            action,
            event_id,
            seq,
            RuntimeError(
                f"the input made more than {limit} events (the last ones: "
                f"{' -> '.join(last_types)}); actions that trigger each other without end? "
                f"Stop the loop, or raise the max_events_per_input setting"
            ),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.key, self.action, self.event_id, self.seq, self.limit, self.last_types)
        return (type(self), args)


class UnhandledEventError(ActionExecutionError):
    """An action sent an event that no action listens to and that is not an
    :class:`~agentstream.OutputEvent` (often a twin class with a typo'd or duplicated
    name). Raised by strict runners (``LocalRunner(strict=True)``); otherwise the event is
    dropped with a warning and the ``agentstream_unhandled_events_total`` metric.

    Attributes:
        event_type: the type name of the event.
    """

    reason = "unhandled-event"

    def __init__(self, key: Any, action: str, event_id: str, seq: int, event_type: str, hint: str):
        self.event_type = event_type
        self.hint = hint
        super().__init__(
            key,
            action,
            event_id,
            seq,
            LookupError(f"no action listens to {event_type} and it is not an OutputEvent{hint}"),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.key, self.action, self.event_id, self.seq, self.event_type, self.hint)
        return (type(self), args)


class EventSendError(ActionExecutionError):
    """An event an action sent could not be delivered (the output sink or the router
    raised); ``cause`` is what it raised."""

    reason = "send"
    retriable = True


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
