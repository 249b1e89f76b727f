"""Durable call results as records: plain data in, plain data out, never code.

A durable call's result is written into the changelog, and read back by another process
after a crash. Whoever can write that topic chooses those bytes, so reading them must never
run code: no pickle, no import of a module the bytes name. A result is recorded as::

    msgpack [data]           data: the result itself, plain data (None, bool, int, float,
                             str, bytes, lists, dicts)
    msgpack [data, ref]      data: a pydantic model or dataclass dumped by its schema;
                             ref: "module:QualName" of the value's own class

and read back as follows (the first rule that applies):

1. the durable function declares its return type (``-> Answer``, ``-> list[Step]``) and
   pydantic can validate it: the data is validated by a ``TypeAdapter`` of that type. The
   type comes from the code, not from the record, so renaming the class between a crash
   and its recovery is harmless;
2. the record names a class (``ref``): it is looked up among the modules already imported
   (a record never makes anything be imported, so it never runs a module's code) and taken
   only if it is a pydantic model or a dataclass (not a pydantic-settings class, which
   reads the environment); the data is validated by its schema, the same thing pydantic
   does with any untrusted input;
3. otherwise the data is the result.

Recording checks, at the call, that the value comes back as it went in (same type, equal);
a value that would not (a set, a tuple, a class of its own without a return annotation,
a model defined inside a function...) raises :class:`~agentstream.errors.SerializationError`
naming the function and the fix, instead of failing a recovery later.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pydantic import BaseModel, TypeAdapter

from agentstream.api.ids import qualified_name
from agentstream.errors import SerializationError
from agentstream.serde import dumps, loads

__all__ = ["UnreadableResult", "decode_result", "encode_result"]

_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)
_NO_TYPE = (Any, object, None, type(None))


class UnreadableResult(Exception):
    """A recorded result cannot be read back (internal): the call runs again instead."""


def _target(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn.func if isinstance(fn, functools.partial) else fn


@functools.lru_cache(maxsize=1024)
def _declared(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    """The adapter of ``fn``'s declared return type; None when it declares none usable."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references, builtins, callables objects
        return None
    returns = hints.get("return")
    origin = typing.get_origin(returns)
    if origin in (Awaitable, Coroutine):  # a plain function returning an awaitable
        args = typing.get_args(returns)
        returns = args[-1] if args else None
    if returns in _NO_TYPE:
        return None
    try:
        return TypeAdapter(returns)
    except Exception:  # no schema (e.g. ``Result | Stream``): judged by the value instead
        return None


def _adapter_of(fn: Callable[..., Any]) -> TypeAdapter[Any] | None:
    target = _target(fn)
    try:
        return _declared(target)
    except TypeError:  # unhashable callable: no cache
        return _declared.__wrapped__(target)


_CLASS_ADAPTERS: dict[type, TypeAdapter[Any]] = {}  # at most one per loaded class


def _class_adapter(cls: type) -> TypeAdapter[Any]:
    adapter = _CLASS_ADAPTERS.get(cls)
    if adapter is None:
        adapter = _CLASS_ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def _is_plain(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is list:
        return all(_is_plain(item) for item in value)
    if kind is dict:
        return all(type(k) in _PLAIN_SCALARS and _is_plain(v) for k, v in value.items())
    return False


def _is_schema_class(cls: Any) -> bool:
    return isinstance(cls, type) and (issubclass(cls, BaseModel) or dataclasses.is_dataclass(cls))


def find_class(ref: str) -> type | None:
    """The pydantic model or dataclass named ``module:QualName``, if its module is imported.

    Looks only in ``sys.modules`` and in the namespaces' ``__dict__`` (never ``getattr``,
    which may run a module's ``__getattr__``): nothing is imported, no code runs.
    """
    module_name, _, qualname = ref.partition(":")
    module = sys.modules.get(module_name)
    if module is None or not qualname:
        return None
    first, *rest = qualname.split(".")
    found: Any = vars(module).get(first)
    for part in rest:
        if not isinstance(found, type):
            return None
        found = found.__dict__.get(part)
    if not _is_schema_class(found) or _is_settings(found):
        return None
    return found


def _is_settings(cls: type) -> bool:
    """pydantic-settings classes read the environment and files when built: never from a
    record."""
    return any(base.__module__.startswith("pydantic_settings") for base in cls.__mro__)


def _fail(fn: Callable[..., Any], value: Any, why: str) -> SerializationError:
    name = qualified_name(_target(fn))
    return SerializationError(
        f"the result of durable call {name} ({type(value).__name__}) cannot be recorded: "
        f"{why}. Return plain data (dict, list, str, int, float, bool, None, bytes), or a "
        f"pydantic model or dataclass defined at module level, and declare the function's "
        f"return type (e.g. `-> {type(value).__name__}`) so that it is read back by that type"
    )


def encode_result(fn: Callable[..., Any], value: Any) -> bytes:
    """``value``, the result of durable function ``fn``, as it is recorded.

    Raises:
        SerializationError: the value would not be read back as it is (see the module).
    """
    adapter = _adapter_of(fn)
    ref: str | None = None
    cls = type(value)
    if _is_schema_class(cls):
        ref = qualified_name(cls, ":")
        if adapter is None:
            if find_class(ref) is not cls:
                raise _fail(fn, value, f"its class {cls.__qualname__} cannot be found by name")
            adapter = _class_adapter(cls)
    elif adapter is None and not _is_plain(value):
        raise _fail(fn, value, "it is not plain data and the function declares no return type")
    try:
        data = value if adapter is None else adapter.dump_python(value, warnings="error")
        blob = dumps([data] if ref is None else [data, ref], what="durable call result")
        back = decode_result(fn, blob)
    except SerializationError as exc:
        raise _fail(fn, value, str(exc)) from exc
    except Exception as exc:  # pydantic: the value does not fit the declared type
        raise _fail(fn, value, f"{type(exc).__name__}: {exc}") from exc
    if not (
        _equal(back, value) or (adapter is not None and _equal(adapter.dump_python(back), data))
    ):
        raise _fail(fn, value, f"it would be read back as {back!r}")
    return blob


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` where containers also match in type (a tuple is no list) and NaN equals
    NaN; a model or dataclass compared by ``==`` failing that (``eq=False``) is compared
    by its dump in the caller."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return bool(a == b or (a != a and b != b))
    if kind is list or kind is tuple:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind is dict:
        return a.keys() == b.keys() and all(_equal(v, b[k]) for k, v in a.items())
    return bool(a == b)


def decode_result(fn: Callable[..., Any], blob: bytes) -> Any:
    """The result recorded by :func:`encode_result` for durable function ``fn``.

    Raises:
        UnreadableResult: the record cannot be read back as a value (e.g. its class is not
            found and the function declares no return type).
    """
    try:
        fields = loads(blob)
        if not isinstance(fields, list) or not 1 <= len(fields) <= 2:
            raise UnreadableResult(f"not a recorded result: {type(fields).__name__}")
        data = fields[0]
        adapter = _adapter_of(fn)
        if adapter is None and len(fields) == 2:
            cls = find_class(str(fields[1]))
            if cls is None:
                raise UnreadableResult(
                    f"its class {fields[1]} is not a pydantic model or dataclass of an imported "
                    f"module, and {qualified_name(_target(fn))} declares no return type"
                )
            adapter = _class_adapter(cls)
        return data if adapter is None else adapter.validate_python(data)
    except UnreadableResult:
        raise
    except SerializationError:
        raise
    except Exception as exc:
        raise UnreadableResult(f"{type(exc).__name__}: {exc}") from exc
