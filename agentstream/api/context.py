"""What an action sees: the :class:`RunnerContext` and :class:`MemoryObject` interfaces.

The runtime provides the implementations; both may only be used on the event loop's
thread while the action runs (a thread-pool function gets a clear error instead).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, overload

from agentstream.api.events import Event
from agentstream.api.metrics import MetricGroup

__all__ = ["MemoryObject", "Reconciler", "RunnerContext", "set_long_term_memory_factory"]

T = TypeVar("T")

# Builds ``ctx.long_term_memory``; set by agentstream.llm when it is imported.
_long_term_memory_factory: Callable[[RunnerContext], Any] | None = None


def set_long_term_memory_factory(factory: Callable[[RunnerContext], Any]) -> None:
    """Install what ``RunnerContext.long_term_memory`` returns (agentstream.llm does)."""
    global _long_term_memory_factory
    _long_term_memory_factory = factory


Reconciler = Callable[..., Any]
"""Called with the durable call's arguments when an earlier attempt of the call started but
its outcome was not recorded (the process died mid-call). It returns the call's outcome (for
example by asking the remote side by an idempotency key) or raises."""


class MemoryObject(abc.ABC):
    """A node of an agent's memory: nested fields addressed by dotted paths ``"a.b.c"``."""

    @abc.abstractmethod
    def get(self, path: str) -> Any:
        """The value at ``path``; a :class:`MemoryObject` for a nested object; None if absent."""

    @abc.abstractmethod
    def set(self, path: str, value: Any) -> None:
        """Set the value at ``path`` (parents are created); the value must serialize."""

    @abc.abstractmethod
    def new_object(self, path: str, overwrite: bool = False) -> MemoryObject:
        """Create (or with ``overwrite`` replace) an empty nested object at ``path``."""

    @abc.abstractmethod
    def is_exist(self, path: str) -> bool:
        """Whether a value or object exists at ``path``."""

    @abc.abstractmethod
    def get_field_names(self) -> list[str]:
        """The names of this object's direct fields."""

    @abc.abstractmethod
    def get_fields(self) -> dict[str, Any]:
        """This object's direct fields (nested objects as :class:`MemoryObject`)."""


class RunnerContext(abc.ABC):
    """The context an action runs in."""

    @property
    @abc.abstractmethod
    def key(self) -> Any:
        """The key of the record being processed."""

    @property
    @abc.abstractmethod
    def seq(self) -> int:
        """The key's sequence number of the input being processed."""

    @abc.abstractmethod
    def send_event(self, event: Event) -> None:
        """Send an event; it is processed after this action finishes."""

    @property
    @abc.abstractmethod
    def short_term_memory(self) -> MemoryObject:
        """Memory of this key that persists across inputs."""

    @property
    @abc.abstractmethod
    def sensory_memory(self) -> MemoryObject:
        """Memory of this key cleared when the current input is done."""

    @property
    def long_term_memory(self) -> Any:
        """The key's long-term memory: ``agentstream.llm.LongTermMemory`` (add, search,
        get, delete), kept in the key's state."""
        if _long_term_memory_factory is None:
            raise RuntimeError("long-term memory comes with agentstream.llm: import it first")
        return _long_term_memory_factory(self)

    @abc.abstractmethod
    def get_resource(self, name: str) -> Any:
        """A resource registered on the agent."""

    @property
    @abc.abstractmethod
    def action_config(self) -> Mapping[str, Any]:
        """The running action's configuration."""

    @property
    @abc.abstractmethod
    def agent_metric_group(self) -> MetricGroup:
        """User metrics labelled with the agent."""

    @property
    @abc.abstractmethod
    def action_metric_group(self) -> MetricGroup:
        """User metrics labelled with the agent and the running action."""

    @abc.abstractmethod
    def durable_execute(
        self, fn: Callable[..., T], *args: Any, reconciler: Reconciler | None = None, **kwargs: Any
    ) -> T:
        """Run ``fn`` once: on replay its recorded result is returned instead of calling it.

        ``fn`` is a plain function; a coroutine function is refused with a ``TypeError``
        (use ``await ctx.durable_execute_async(fn, ...)``)."""

    @overload
    def durable_execute_async(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        reconciler: Reconciler | None = None,
        **kwargs: Any,
    ) -> Awaitable[T]: ...

    @overload
    def durable_execute_async(
        self,
        fn: Callable[..., T],
        *args: Any,
        reconciler: Reconciler | None = None,
        **kwargs: Any,
    ) -> Awaitable[T]: ...

    @abc.abstractmethod
    def durable_execute_async(
        self,
        fn: Callable[..., Any],
        *args: Any,
        reconciler: Reconciler | None = None,
        **kwargs: Any,
    ) -> Awaitable[Any]:
        """Like :meth:`durable_execute`; a coroutine function is awaited, a blocking one runs
        in a thread pool. Await it in the action: a call left un-awaited when the action
        returns fails the action."""
