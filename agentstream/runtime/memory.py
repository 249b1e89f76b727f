"""Memory: a key's short-term and sensory memory, as flat maps of dotted paths.

A store holds ``values`` (path -> value) and ``objects`` (paths of nested objects). Every
write made by an action is recorded as a :data:`MemoryUpdate` so that replay can re-apply
it; values are copied through the serializer on write, which both checks them and keeps
later mutation of the caller's object out of memory. A value that would not come back
exactly (a tuple, a datetime, a model) is refused at ``set``. ``get`` returns a copy of a
list or dict: changing it in place changes nothing until it is ``set`` back (so what an
action changed is always recorded, and replays the same); how values are copied, checked
and extended is in :mod:`agentstream.runtime.memory_values`.

A store also notes which paths it changed since it was loaded (``touched``), so that a
backend that keeps memory per path writes only those (DESIGN.md, "State layout and cost").

Setting a list that begins with the list memory holds (a history that grew by a message)
is recorded as an extension, ``("ext", scope, path, [length before, appended items])``:
only the appended items are copied, recorded and (by a backend that keeps long lists in
segments) stored, so the cost of appending does not grow with the list. The store notes
such paths (``extended``) with the length they had when it was loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentstream.api.context import MemoryObject
from agentstream.runtime.memory_values import MemoryUpdate, copy_in, copy_out, extension

__all__ = ["MemoryStore", "MemoryUpdate", "StoreMemoryObject", "apply_updates", "memory_tree"]


def _join(prefix: str, path: str) -> str:
    if not path or ("." in path and any(not part for part in path.split("."))):
        raise ValueError(f"invalid memory path {path!r}: use dotted names like 'a.b.c'")
    return f"{prefix}.{path}" if prefix else path


Snapshot = tuple[dict[str, Any], set[str]]


class MemoryStore:
    """One memory scope of one key.

    Copy on write: the containers may be shared with a snapshot or a stored record
    (``_shared``); the first write after that copies them, so taking a snapshot or dumping
    costs nothing for an input that does not write.

    ``touched`` holds every path (value or object) written or removed since the store was
    built, None while there is none: a superset of what changed (a rolled-back write stays
    in it), so that a per-path backend writes those paths and nothing else. ``extended``
    maps the touched paths that only extensions changed to their length when the store was
    built: their first items are still the ones loaded (a backend appends the rest).
    """

    __slots__ = ("_shared", "_state", "extended", "objects", "scope", "touched", "values")

    def __init__(self, scope: str, state: dict[str, Any] | None = None):
        self.scope = scope
        self._state = state  # what the store was built from, while unchanged
        self.touched: set[str] | None = None
        self.extended: dict[str, int] = {}
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
        if self.touched is None:
            self.touched = set()

    def clear(self) -> None:
        if self.values or self.objects:
            self._own()
            assert self.touched is not None
            self.touched.update(self.values, self.objects)
            self.extended.clear()
        self.values = {}
        self.objects = set()
        self._shared = False

    def _drop_subtree(self, path: str) -> None:
        prefix = path + "."
        touched = self.touched
        assert touched is not None  # _own ran
        extended = self.extended
        for p in [p for p in self.values if p == path or p.startswith(prefix)]:
            del self.values[p]
            touched.add(p)
            if extended:
                extended.pop(p, None)
        dropped = {o for o in self.objects if o == path or o.startswith(prefix)}
        if dropped:
            self.objects -= dropped
            touched.update(dropped)

    def check_parents(self, path: str) -> None:
        """Raise if a parent of ``path`` holds a plain value (``path`` cannot exist)."""
        parts = path.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in self.values:
                raise ValueError(
                    f"cannot use {path!r}: {parent!r} holds a value, not an object; read "
                    f"{parent!r} itself, or make it an object with new_object"
                )

    def _ensure_parents(self, path: str, replay: bool) -> None:
        parts = path.split(".")
        touched = self.touched
        assert touched is not None  # _own ran
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in self.values:
                if not replay:
                    raise ValueError(
                        f"cannot create {path!r}: {parent!r} holds a value, not an object; "
                        f"set {parent!r} as a whole, or replace it with "
                        "new_object(overwrite=True)"
                    )
                # Replaying over memory that already holds the input's later writes (a
                # crash cut the input's finish in half): the update wins, as it did live.
                del self.values[parent]
            if parent not in self.objects:
                self.objects.add(parent)
                touched.add(parent)

    def apply(self, update: MemoryUpdate, replay: bool = False) -> None:
        """Apply one recorded update (used live and on replay).

        A recorded update is an assignment, so replaying an input's updates in order gives
        the same memory whether the store holds the memory of the input's start or some of
        the input's own writes already; ``replay`` lets an update replace a value where it
        needs an object (which a live write refuses).
        """
        op, _scope, path, value = update
        self._own()
        touched = self.touched
        assert touched is not None
        if op == "ext":
            length, items = value
            current = self.values.get(path)
            if type(current) is list and len(current) >= length:
                # Longer only on replay, over the input's own later writes (a crash cut
                # its finish): the first items are the same.
                value = current + items if len(current) == length else current[:length] + items
                if path not in touched:
                    self.extended[path] = length
            elif not replay:  # pragma: no cover - set() records an extension of the list
                raise ValueError(f"{path!r} does not hold a list of {length} items")
            else:
                # Replayed over a value that a later update of the same input replaces
                # (an extension replayed over anything but a list the input extended).
                value = list(items)
                self.extended.pop(path, None)
        elif self.extended:
            self.extended.pop(path, None)
        if op == "set" or op == "ext":
            if self.objects and path in self.objects:
                self._drop_subtree(path)
            if "." in path:
                self._ensure_parents(path, replay)
            self.values[path] = value
            touched.add(path)
        elif op == "obj":
            self._drop_subtree(path)
            self._ensure_parents(path, replay)
            self.objects.add(path)
            touched.add(path)
        else:  # pragma: no cover - records are written by this module only
            raise ValueError(f"unknown memory update {op!r}")

    def children(self, prefix: str) -> list[str]:
        start = prefix + "." if prefix else ""
        names: dict[str, None] = {}
        for p in (*self.values, *sorted(self.objects)):
            if p.startswith(start) and p != prefix:
                names.setdefault(p[len(start) :].split(".", 1)[0], None)
        return list(names)


def memory_tree(store: MemoryStore | dict[str, Any] | None) -> dict[str, Any]:
    """A store (or its dumped state) as nested dicts: objects become dicts, dotted paths
    nest (``{"stats": {"count": 2}}``); a copy, for inspection."""
    if store is None:
        return {}
    values: dict[str, Any]
    objects: Iterable[str]
    if isinstance(store, MemoryStore):
        values, objects = store.values, store.objects
    else:
        values, objects = store.get("values") or {}, store.get("objects") or ()
    tree: dict[str, Any] = {}

    def node(path: str) -> dict[str, Any]:
        here = tree
        for part in path.split("."):
            here = here.setdefault(part, {})
        return here

    for path in sorted(objects):
        node(path)
    for path, value in values.items():
        parent, _, name = path.rpartition(".")
        (node(parent) if parent else tree)[name] = copy_out(value)
    return tree


def apply_updates(stores: dict[str, MemoryStore], updates: Iterable[MemoryUpdate]) -> None:
    """Re-apply recorded updates to the stores by scope."""
    for update in updates:
        stores[update[1]].apply(update, True)


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
        value = store.values.get(full)
        if value is None:
            if full in store.values or "." not in full:
                return None
            store.check_parents(full)  # under a plain value: an error, as for set
            return None
        kind = type(value)
        return copy_out(value) if kind is dict or kind is list else value

    def set(self, path: str, value: Any) -> None:
        self._check()
        full = _join(self._prefix, path)
        store = self._store
        update: MemoryUpdate | None = None
        if type(value) is list:
            current = store.values.get(full)
            if type(current) is list and 0 < len(current) < len(value):
                update = extension(store.scope, full, current, value)
        if update is None:
            update = ("set", store.scope, full, copy_in(value, full))
        store.apply(update)
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
