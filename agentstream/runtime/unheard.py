"""Events that no action listens to: a typo'd twin class is a silent mistake otherwise.

An event an action sends that is not an ``OutputEvent`` and triggers no action would just
vanish. The step counts each one (``agentstream_unhandled_events_total``) and, through
:class:`UnheardEvents`, warns once per event type naming the sender and the likely fix (a
listened-to class of the same name: the twin), or, in a strict runner, fails the input.
"""

from __future__ import annotations

import logging

from agentstream.api.agent import Agent
from agentstream.api.events import Event
from agentstream.errors import UnhandledEventError

__all__ = ["UnheardEvents"]

log = logging.getLogger("agentstream.runtime.step")  # where the step's warnings go


class UnheardEvents:
    """The warning (once per type) or the error (``strict``) for unheard events."""

    def __init__(self, agent: Agent, strict: bool):
        self._agent = agent
        self.strict = strict
        self._warned: set[type[Event]] = set()

    def error(self, key: object, sender: str, event: Event, seq: int) -> UnhandledEventError:
        """The error that fails the input in strict mode."""
        assert event.id is not None
        event_type = type(event)
        return UnhandledEventError(
            key, sender, event.id, seq, event_type.type_name(), self.hint(event_type)
        )

    def warn(self, event_type: type[Event], sender: str | None) -> None:
        """Log once per type that events of ``event_type`` are dropped."""
        if event_type in self._warned:
            return
        self._warned.add(event_type)
        by = "the input" if sender is None else f"action {sender!r}"
        log.warning(
            "event %s sent by %s triggers no action and is not an OutputEvent: it is dropped "
            "(warned once per type; counted in agentstream_unhandled_events_total)%s",
            event_type.type_name(),
            by,
            self.hint(event_type),
        )

    def hint(self, event_type: type[Event]) -> str:
        """A remedy: the listened-to type of the same name (a twin class), or how to fix."""
        listened = {t for a in self._agent.actions for t in a.events}
        twins = sorted(
            t.type_name()
            for t in listened
            if t.__name__.lower() == event_type.__name__.lower() and t is not event_type
        )
        if twins:
            return f"; did you mean {', '.join(twins)} (a class of the same name)?"
        known = sorted(t.__name__ for t in listened)
        return f"; add an @action({event_type.__name__}) or send one of {known}"
