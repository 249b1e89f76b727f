"""Events: what actions receive and send.

An event is a pydantic model. Custom events subclass :class:`Event` and declare typed
fields; undeclared attributes are allowed too (they travel with the event). Every event
class is registered by its *type name* (``module.QualName``) so that serialized events,
event-log records and internal-topic records come back as the right class.

Identity (DESIGN.md, "Identity and determinism"): an input's id comes from where the
record came from; an event sent by an action gets ``derive_event_id(parent, action, index)``,
so replaying an input yields the same ids.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentstream.api.ids import derive_event_id, qualified_name

__all__ = [
    "Event",
    "InputEvent",
    "OutputEvent",
    "derive_event_id",
    "event_class_for",
    "event_type_name",
]

_REGISTRY: dict[str, type[Event]] = {}


def event_type_name(cls: type[Any]) -> str:
    """The registered type name of an event class: ``module.QualName``."""
    return qualified_name(cls)


class Event(BaseModel):
    """Base class of every event.

    Attributes:
        id: deterministic id, assigned by the runtime when the event is sent.
        parent_id: the id of the event whose action sent this one (None for inputs).
        source_timestamp: event time of the input that caused this event (ms since epoch).
    """

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    id: str | None = None
    parent_id: str | None = None
    source_timestamp: int | None = None

    _type_name: ClassVar[str] = "agentstream.api.events.Event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._type_name = event_type_name(cls)
        _REGISTRY[cls._type_name] = cls

    @classmethod
    def type_name(cls) -> str:
        """The name this class is registered and serialized under."""
        return cls._type_name

    def attributes(self) -> dict[str, Any]:
        """The event's payload: declared and extra fields, without the identity fields."""
        data = self.model_dump(mode="python")
        for name in ("id", "parent_id", "source_timestamp"):
            data.pop(name, None)
        return data


_REGISTRY[Event._type_name] = Event


class InputEvent(Event):
    """Wraps one input record; ``input`` is the decoded record value."""

    input: Any = None


class OutputEvent(Event):
    """Sending one ends a branch: ``output`` goes to the output (topic)."""

    output: Any = None


def event_class_for(type_name: str) -> type[Event] | None:
    """The event class registered under ``type_name``, if it has been imported."""
    return _REGISTRY.get(type_name)
