"""Handing a coroutine that was stepped by hand over to a task.

This module is never compiled (see setup.py): ``asyncio`` accepts only real coroutines, and
a generator-based one (``types.coroutine``) must stay a Python generator.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["adopt"]


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
