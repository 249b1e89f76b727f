"""Values in memory: how they go in, come out and grow.

What memory keeps is a copy made through the serializer, which also checks that the value
comes back exactly after a restart (:func:`copy_in`); what ``get`` returns is a copy of a
list or dict, so changing it changes nothing until it is set back (:func:`copy_out`); and
a list set with the items memory held and more after them is an extension
(:func:`extension`), whose appended items alone are copied and recorded.
"""

from __future__ import annotations

from typing import Any

from agentstream.api.context import MemoryObject
from agentstream.errors import SerializationError
from agentstream.serde import dumps, loads

__all__ = ["MemoryUpdate", "copy_in", "copy_out", "extension"]

# ("set", scope, path, value), ("obj", scope, path, None) or ("ext", scope, path,
# [length, items]): the list at path, its first ``length`` items kept, with ``items`` after
# them. scope is "short" or "sensory".
MemoryUpdate = tuple[str, str, str, Any]


_IMMUTABLE = frozenset({str, float, bool, type(None)})


def copy_in(value: Any, where: str) -> Any:
    """``value`` as memory keeps it: copied through the serializer (which checks it).

    Immutable scalars are kept as they are (the round trip would return an equal value).
    A value that would not come back exactly as it went in (a tuple as a list, a datetime
    or a pydantic model as a string or a mapping, a set, a subclass of a plain type) is
    refused, naming the path and the type: what an action reads on replay or after a
    restart is what it wrote.
    """
    kind = type(value)
    if kind in _IMMUTABLE or (kind is int and -(2**63) <= value < 2**64):
        return value
    if isinstance(value, MemoryObject):
        raise SerializationError("memory values cannot be MemoryObjects; use new_object")
    packed = dumps(value, what=f"memory value at {where!r}")
    try:
        copied = loads(packed)
    except (TypeError, ValueError) as exc:  # a dict key that cannot come back (a tuple)
        raise SerializationError(
            f"memory cannot keep the value at '{where}': {exc} (dict keys must be str or "
            "int; a tuple key does not come back)"
        ) from exc
    found = _mismatch(value, copied)
    if found is not None:
        raise SerializationError(
            f"memory cannot keep the value at '{where}{found[0]}' ({found[1]}) exactly (it "
            "would come back "
            "otherwise after a restart); store JSON-like values (dict with str or int keys, "
            "list, str, int, float, bool, None, bytes) and convert yours, e.g. "
            "model.model_dump(), moment.isoformat(), list(a_tuple)"
        )
    return copied


def _mismatch(value: Any, other: Any) -> tuple[str, str] | None:
    """Where (a suffix like ``[0]['a']``) and what makes ``other`` not exactly ``value``: a
    type that differs somewhere, all the way down (a tuple that came back as a list, 1.0
    for 1, a subclass for its base); None if there is none. Used on a value and its round
    trip, and on an extension's start and the items memory holds (equal already)."""
    if value is other:
        return None
    kind = type(value)
    if kind is not type(other):
        return "", f"a {kind.__module__}.{kind.__qualname__}".replace("builtins.", "")
    if kind is dict:
        for (key, item), (key_other, item_other) in zip(value.items(), other.items(), strict=True):
            if type(key) is not type(key_other) or key != key_other:
                return "", f"a key of type {type(key).__name__}: {key!r}"
            found = _mismatch(item, item_other)
            if found is not None:
                return f"[{key!r}]{found[0]}", found[1]
        return None
    if kind is list:
        for index, (item, item_other) in enumerate(zip(value, other, strict=True)):
            found = _mismatch(item, item_other)
            if found is not None:
                return f"[{index}]{found[0]}", found[1]
        return None
    if kind is float and value != value:  # NaN comes back as NaN
        return None if other != other else ("", "a float")
    return None if value == other else ("", f"a {kind.__name__}")


def copy_out(value: Any) -> Any:
    """A copy of a stored list or dict: changing what ``get`` returned does not change
    memory (only ``set`` does, which is recorded and replayed)."""
    kind = type(value)
    if kind is dict:
        copied = dict(value)  # then only the containers in it are copied
        for key, item in value.items():
            inner = type(item)
            if inner is dict or inner is list:
                copied[key] = copy_out(item)
        return copied
    if kind is list:
        items = list(value)
        for index, item in enumerate(value):
            inner = type(item)
            if inner is dict or inner is list:
                items[index] = copy_out(item)
        return items
    return value


def extension(scope: str, path: str, current: list[Any], value: list[Any]) -> MemoryUpdate | None:
    """``value`` as an extension of ``current`` (memory's list at ``path``): None unless
    ``value`` begins with exactly ``current``'s items.

    The items an action read are the very objects memory holds (strings, numbers) or
    equal copies of them (lists, dicts); an equal item of another type (1.0 for 1), or a
    dict in another order, makes it a plain set, as memory keeps what it is given. Only
    the appended items are copied in.
    """
    length = len(current)
    head = value[:length]
    if head != current:
        return None
    for item, held in zip(head, current, strict=True):
        if item is not held and _mismatch(item, held) is not None:
            return None
    return ("ext", scope, path, [length, copy_in(value[length:], f"{path}[{length}:]")])
