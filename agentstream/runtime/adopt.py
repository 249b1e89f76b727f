"""Stepping a coroutine by hand, and handing it over to a task afterwards.

This module is never compiled (see setup.py): ``asyncio`` accepts only real coroutines, and
a generator-based one (``types.coroutine``) must stay a Python generator. Catching the
``StopIteration`` of a finished coroutine is also cheaper here than in compiled code, which
records a traceback entry for every exception it sees.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["DONE", "Returned", "adopt", "first_result", "first_step"]

DONE: Any = object()  # first_step's answer for a coroutine that finished without waiting


def first_step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` until it first waits: what it waits on, or :data:`DONE` if it
    finished (its exceptions propagate).

    ``next`` with a default, not ``send``: a coroutine that returns None then finishes
    without raising StopIteration at all (no exception, traceback or frame object made).
    """
    return next(coro.__await__(), DONE)


class Returned:
    """:func:`first_result`'s answer for a coroutine that finished returning a value."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


def first_result(coro: Coroutine[Any, Any, Any]) -> Any:
    """:func:`first_step` for an action's coroutine, whose return value matters (an action
    must return None): :data:`DONE`, what it waits on, or :class:`Returned`.

    A coroutine that returns None raises StopIteration here (``send``, unlike ``next``
    with a default, always does); that costs about 0.1 µs per async action that finishes
    without waiting.
    """
    try:
        return coro.send(None)
    except StopIteration as stop:
        return DONE if stop.value is None else Returned(stop.value)


@types.coroutine
def adopt(coro: Coroutine[Any, Any, Any], waiting_on: Any) -> Generator[Any, Any, Any]:
    """Continue a coroutine, already stepped once by hand, inside a task; returns what
    the coroutine returns.

    The future it yielded is passed up to the task unchanged, so the task waits on it
    exactly as if it had run the coroutine from the start.
    """
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # cancellation and the like go to the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration as stop:
                return stop.value
