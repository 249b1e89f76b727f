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

__all__ = ["DONE", "adopt", "first_step"]

DONE: Any = object()  # first_step's answer for a coroutine that finished without waiting


def first_step(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` until it first waits: what it waits on, or :data:`DONE` if it
    finished (its exceptions propagate).

    ``next`` with a default, not ``send``: a coroutine that returns None then finishes
    without raising StopIteration at all (no exception, traceback or frame object made).
    """
    return next(coro.__await__(), DONE)


@types.coroutine
def adopt(coro: Coroutine[Any, Any, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """Continue a coroutine, already stepped once by hand, inside a task.

    The future it yielded is passed up to the task unchanged, so the task waits on it
    exactly as if it had run the coroutine from the start.
    """
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # cancellation and the like go to the coroutine
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return
