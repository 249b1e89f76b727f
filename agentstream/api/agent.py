"""Agents and actions: what an agent author declares.

An :class:`Agent` is a set of actions. An action is a plain function ``(event, ctx)``,
sync or ``async def``, triggered by one or more event types::

    class Greeter(Agent):
        @action(InputEvent)
        async def start(event: InputEvent, ctx: RunnerContext) -> None:
            ctx.send_event(OutputEvent(output=f"hello {event.input}"))

An event triggers every action listening to its type or to one of its base classes, in
declaration order (base-class actions first, then the subclass's, then ``add_action``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from agentstream.api.events import Event, OutputEvent
from agentstream.errors import ConfigurationError

__all__ = [
    "Action",
    "ActionDeclaration",
    "ActionFn",
    "Agent",
    "action",
    "register_builtin_action",
]

ActionFn = Callable[..., Any]
P = ParamSpec("P")
R = TypeVar("R")

# Actions every agent has, registered by toolkit packages for their own event types
# (agentstream.llm handles ChatRequestEvent and tool events this way).
_BUILTIN_ACTIONS: list[Action] = []


@dataclass(frozen=True)
class Action:
    """One action of an agent: its name, the event types that trigger it, its function."""

    name: str
    events: tuple[type[Event], ...]
    fn: ActionFn
    config: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None  # seconds; None: the action_timeout_s setting

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


class ActionDeclaration(Generic[P, R]):
    """What ``@action`` leaves in a class body (collected by :class:`Agent`): the function
    with its event types, config and timeout.

    It behaves like a static method, which is what an action is (no ``self``): calling it,
    on the class or an instance, calls the function, and type checkers see the function's
    own signature. Linters that check the first argument of methods (pep8-naming's N805)
    need to be told: ``staticmethod-decorators = ["agentstream.action"]`` (ruff), or stack
    ``@staticmethod`` under ``@action``.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        events: tuple[type[Event], ...],
        config: Mapping[str, Any],
        timeout: float | None = None,
    ):
        self.fn = fn
        self.events = events
        self.config = dict(config)
        self.timeout = timeout
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)


_ActionSpec = ActionDeclaration  # the name older code used


def _check_events(events: Iterable[Any], where: str) -> tuple[type[Event], ...]:
    checked = tuple(events)
    if not checked:
        raise ConfigurationError(f"{where}: give at least one event type")
    for event_type in checked:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise ConfigurationError(f"{where}: {event_type!r} is not an Event subclass")
        if issubclass(event_type, OutputEvent):
            raise ConfigurationError(
                f"{where}: OutputEvent goes straight to the output; no action can listen to it"
            )
    return checked


def _check_fn(fn: Any, where: str) -> None:
    if not callable(fn):
        raise ConfigurationError(f"{where}: {fn!r} is not callable")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    has_varargs = any(p.kind == p.VAR_POSITIONAL for p in params.values())
    if len(positional) < 2 and not has_varargs:
        raise ConfigurationError(f"{where}: an action takes (event, ctx)")


def action(
    *events: type[Event], config: Mapping[str, Any] | None = None, timeout: float | None = None
) -> Callable[[Callable[P, R]], ActionDeclaration[P, R]]:
    """Declare a function in an :class:`Agent` subclass as an action triggered by ``events``.

    Args:
        *events: the event types that trigger the action.
        config: the action's configuration, available as ``ctx.action_config``.
        timeout: seconds the action may take once it first waits (None: the
            ``action_timeout_s`` setting, off by default); past it the action fails with
            :class:`~agentstream.errors.ActionTimeoutError`. A synchronous action that never
            returns cannot be interrupted: the timeout applies to async actions.
    """
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"@action(timeout={timeout!r}): give a positive number of seconds")

    def decorate(fn: Callable[P, R]) -> ActionDeclaration[P, R]:
        if isinstance(fn, staticmethod):  # @action over @staticmethod (Flink Agents' style)
            fn = fn.__func__
        where = f"@action on {getattr(fn, '__qualname__', fn)!r}"
        _check_fn(fn, where)
        return ActionDeclaration(fn, _check_events(events, where), config or {}, timeout)

    return decorate


def register_builtin_action(
    name: str, events: Iterable[type[Event]], fn: ActionFn, config: Mapping[str, Any] | None = None
) -> None:
    """Give every agent an action (after its own ones) for ``events``: how a toolkit
    package handles the event types it defines. Registering a name again replaces it."""
    where = f"register_builtin_action({name!r})"
    _check_fn(fn, where)
    built = Action(name, _check_events(events, where), fn, dict(config or {}))
    _BUILTIN_ACTIONS[:] = [a for a in _BUILTIN_ACTIONS if a.name != name] + [built]


class Agent:
    """Base class of agents. Subclass it and declare actions with :func:`action`.

    Resources (clients, tools, prompts) are registered with :meth:`add_resource` and read
    in actions with ``ctx.get_resource(name)``; a resource given as a zero-argument
    callable with ``lazy=True`` is created on first use.
    """

    name: str = ""

    def __init__(self) -> None:
        self._actions: list[Action] = []
        self._resources: dict[str, Any] = {}
        self._lazy: dict[str, Callable[[], Any]] = {}
        self._by_type: dict[type[Event], tuple[Action, ...]] = {}
        seen: set[str] = set()
        for klass in reversed(type(self).__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, staticmethod) and isinstance(value.__func__, _ActionSpec):
                    value = value.__func__  # @staticmethod over @action
                if isinstance(value, _ActionSpec) and attr not in seen:
                    seen.add(attr)
                    self._actions.append(
                        Action(attr, value.events, value.fn, value.config, value.timeout)
                    )
                elif hasattr(value, "__agent_install__") and not isinstance(value, type):
                    # A declaration that registers itself (``@tool`` of agentstream.llm).
                    value.__agent_install__(self, attr)
        if not self.name:
            self.name = type(self).__name__

    @property
    def actions(self) -> tuple[Action, ...]:
        """Every action, in declaration order, then the built-in ones."""
        return (*self._actions, *_BUILTIN_ACTIONS)

    def add_action(
        self,
        name: str,
        events: Iterable[type[Event]],
        fn: ActionFn,
        config: Mapping[str, Any] | None = None,
    ) -> Agent:
        """Add an action at run time; returns the agent for chaining."""
        where = f"add_action({name!r})"
        if any(a.name == name for a in self.actions):
            raise ConfigurationError(f"{where}: the agent already has an action named {name!r}")
        _check_fn(fn, where)
        self._actions.append(Action(name, _check_events(events, where), fn, dict(config or {})))
        self._by_type.clear()
        return self

    def add_resource(self, name: str, value: Any, *, lazy: bool = False) -> Agent:
        """Register a resource; with ``lazy=True`` ``value`` is a factory called once."""
        if lazy:
            self._lazy[name] = value
        else:
            self._resources[name] = value
        return self

    def add_tool(self, fn: Any, *, name: str | None = None) -> Agent:
        """Register a function (sync or async) as a tool chat models may call, under
        ``name`` (default: the tool's or function's name). agentstream.llm derives its
        JSON schema from the signature and docstring."""
        tool_name = name or getattr(fn, "tool_name", None) or getattr(fn, "__name__", None)
        if not callable(fn) or not tool_name:
            raise ConfigurationError(f"add_tool: {fn!r} is not a named callable")
        self._resources[str(tool_name)] = fn
        return self

    def get_resource(self, name: str) -> Any:
        """The resource registered under ``name``; KeyError naming the known ones if absent."""
        if name not in self._resources and name in self._lazy:
            self._resources[name] = self._lazy.pop(name)()
        try:
            return self._resources[name]
        except KeyError:
            known = sorted({*self._resources, *self._lazy})
            raise KeyError(f"no resource named {name!r}; known: {known}") from None

    def actions_for(self, event_type: type[Event]) -> tuple[Action, ...]:
        """The actions an event of ``event_type`` triggers, in declaration order."""
        found = self._by_type.get(event_type)
        if found is None:
            found = tuple(a for a in self.actions if issubclass(event_type, a.events))
            self._by_type[event_type] = found
        return found
