"""Memory: a key's short-term and sensory memory, as flat maps of dotted paths.

A store holds ``values`` (path -> value) and ``objects`` (paths of nested objects). Every
write made by an action is recorded as a :data:`MemoryUpdate` so that replay can re-apply
it; values are copied through the serializer on write, which both checks them and keeps
later mutation of the caller's object out of memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentstream.api.context import MemoryObject
from agentstream.errors import SerializationError
from agentstream.serde import dumps, loads

__all__ = ["MemoryStore", "MemoryUpdate", "StoreMemoryObject", "apply_updates"]

# ("set", scope, path, value) or ("obj", scope, path, None); scope is "short" or "sensory".
MemoryUpdate = tuple[str, str, str, Any]


def _join(prefix: str, path: str) -> str:
    if not path or ("." in path and any(not part for part in path.split("."))):
        raise ValueError(f"invalid memory path {path!r}: use dotted names like 'a.b.c'")
    return f"{prefix}.{path}" if prefix else path


_IMMUTABLE = frozenset({str, float, bool, type(None)})


def _copy_in(value: Any, where: str) -> Any:
    """``value`` as memory keeps it: copied through the serializer (which checks it).

    Immutable scalars are kept as they are (the round trip would return an equal value).
    """
    kind = type(value)
    if kind in _IMMUTABLE or (kind is int and -(2**63) <= value < 2**64):
        return value
    if isinstance(value, MemoryObject):
        raise SerializationError("memory values cannot be MemoryObjects; use new_object")
    return loads(dumps(value, what=f"memory value at {where!r}"))


Snapshot = tuple[dict[str, Any], set[str]]


class MemoryStore:
    """One memory scope of one key.

    Copy on write: the containers may be shared with a snapshot or a stored record
    (``_shared``); the first write after that copies them, so taking a snapshot or dumping
    costs nothing for an input that does not write.
    """

    __slots__ = ("_shared", "_state", "objects", "scope", "values")

    def __init__(self, scope: str, state: dict[str, Any] | None = None):
        self.scope = scope
        self._state = state  # what the store was built from, while unchanged
        if state:
            self.values: dict[str, Any] = state["values"]
            self.objects: set[str] = set(state["objects"])
            self._shared = True
        else:
            self.values = {}
            self.objects = set()
            self._shared = False

    def dump(self) -> dict[str, Any] | None:
        """A serializable snapshot (the form stored in key state), None for an empty
        store; never mutated later."""
        state = self._state
        if state is not None and state["values"] is self.values and self._shared:
            return state  # unchanged since it was loaded
        if not self.values and not self.objects:
            return None  # as for a key never seen (nothing to build or keep)
        self._shared = True
        self._state = {"values": self.values, "objects": sorted(self.objects)}
        return self._state

    def snapshot(self) -> Snapshot:
        """The current contents, to :meth:`restore` later (no copy is made now)."""
        self._shared = True
        return self.values, self.objects

    def restore(self, snapshot: Snapshot) -> None:
        self.values, self.objects = snapshot
        self._shared = True

    def copy(self) -> MemoryStore:
        twin = MemoryStore(self.scope)
        twin.restore(self.snapshot())
        return twin

    def _own(self) -> None:
        if self._shared:
            self.values = dict(self.values)
            self.objects = set(self.objects)
            self._shared = False

    def clear(self) -> None:
        self.values = {}
        self.objects = set()
        self._shared = False

    def _drop_subtree(self, path: str) -> None:
        prefix = path + "."
        for p in [p for p in self.values if p == path or p.startswith(prefix)]:
            del self.values[p]
        self.objects = {o for o in self.objects if not (o == path or o.startswith(prefix))}

    def _ensure_parents(self, path: str) -> None:
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in self.values:
                raise ValueError(f"cannot create {path!r}: {parent!r} holds a value, not an object")
            self.objects.add(parent)

    def apply(self, update: MemoryUpdate) -> None:
        """Apply one recorded update (used live and on replay)."""
        op, _scope, path, value = update
        self._own()
        if op == "set":
            if self.objects and path in self.objects:
                self._drop_subtree(path)
            if "." in path:
                self._ensure_parents(path)
            self.values[path] = value
        elif op == "obj":
            self._drop_subtree(path)
            self._ensure_parents(path)
            self.objects.add(path)
        else:  # pragma: no cover - records are written by this module only
            raise ValueError(f"unknown memory update {op!r}")

    def children(self, prefix: str) -> list[str]:
        start = prefix + "." if prefix else ""
        names: dict[str, None] = {}
        for p in (*self.values, *sorted(self.objects)):
            if p.startswith(start) and p != prefix:
                names.setdefault(p[len(start) :].split(".", 1)[0], None)
        return list(names)


def apply_updates(stores: dict[str, MemoryStore], updates: Iterable[MemoryUpdate]) -> None:
    """Re-apply recorded updates to the stores by scope."""
    for update in updates:
        stores[update[1]].apply(update)


class StoreMemoryObject(MemoryObject):
    """A view of a :class:`MemoryStore` at a path, recording writes through ``record``."""

    __slots__ = ("_check", "_prefix", "_record", "_store")

    def __init__(
        self,
        store: MemoryStore,
        prefix: str,
        record: Callable[[MemoryUpdate], None],
        check: Callable[[], None],
    ):
        self._store = store
        self._prefix = prefix
        self._record = record
        self._check = check

    def _child(self, path: str) -> StoreMemoryObject:
        return StoreMemoryObject(self._store, path, self._record, self._check)

    def get(self, path: str) -> Any:
        self._check()
        full = _join(self._prefix, path)
        store = self._store
        if store.objects and full in store.objects:
            return self._child(full)
        return store.values.get(full)

    def set(self, path: str, value: Any) -> None:
        self._check()
        full = _join(self._prefix, path)
        update: MemoryUpdate = ("set", self._store.scope, full, _copy_in(value, full))
        self._store.apply(update)
        self._record(update)

    def new_object(self, path: str, overwrite: bool = False) -> MemoryObject:
        self._check()
        full = _join(self._prefix, path)
        if full in self._store.objects and not overwrite:
            return self._child(full)
        if full in self._store.values and not overwrite:
            raise ValueError(f"{full!r} holds a value; pass overwrite=True to replace it")
        update: MemoryUpdate = ("obj", self._store.scope, full, None)
        self._store.apply(update)
        self._record(update)
        return self._child(full)

    def is_exist(self, path: str) -> bool:
        self._check()
        full = _join(self._prefix, path)
        return full in self._store.values or full in self._store.objects

    def get_field_names(self) -> list[str]:
        self._check()
        return self._store.children(self._prefix)

    def get_fields(self) -> dict[str, Any]:
        return {name: self.get(name) for name in self.get_field_names()}

    def __repr__(self) -> str:
        return f"<MemoryObject {self._store.scope}:{self._prefix or '<root>'}>"
