"""The concurrency cap of the key loop: free permits and a FIFO of keys waiting for one.

A key takes a permit for each input it processes and gives it back when the input ends.
A key that finds none waits in line; a permit given back goes to the first key in line,
which the operator then runs (inline, like any other). Such a run may itself end inputs
and give permits back: those are handed out by the outermost call's loop, never by
recursion, however many keys wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

__all__ = ["ConcurrencyLimit"]

_UNLIMITED: Final = 1 << 40  # "no cap"; within a tagged int of compiled code (1 << 62 is not)


class ConcurrencyLimit:
    """At most ``permits`` inputs in progress at once (None: no cap).

    Args:
        permits: how many inputs may be in progress at once; None for no cap.

    The limit holds no reference to the operator (a cycle would keep a dropped operator
    alive until the cycle collector ran): :meth:`release` is given what runs a key.
    """

    __slots__ = ("_free", "_handing", "_handoffs", "_waiting")

    def __init__(self, permits: int | None):
        self._free = permits or _UNLIMITED
        self._waiting: deque[Hashable] = deque()
        self._handoffs = 0  # permits given back, not yet handed to a waiting key
        self._handing = False

    def acquire(self, slot: Hashable) -> bool:
        """Take a permit for the key's next input, or put the key in line (False)."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return True
        self._waiting.append(slot)
        return False

    def release(self, run_waiting: Callable[[Hashable], bool]) -> None:
        """An input ended: its permit goes to the first key in line, if any, which
        ``run_waiting`` runs (it returns False if the key has nothing to run any more: the
        permit then goes to the next key)."""
        if not self._waiting:
            self._free += 1
            return
        self._handoffs += 1
        if self._handing:
            return
        self._handing = True
        try:
            while self._handoffs and self._waiting:
                self._handoffs -= 1
                if not run_waiting(self._waiting.popleft()):
                    self._handoffs += 1
            self._free += self._handoffs
            self._handoffs = 0
        finally:
            self._handing = False

    def withdraw(self, doomed: Callable[[Hashable], bool]) -> list[Hashable]:
        """Take the waiting keys for which ``doomed`` is true out of line; returns them."""
        out = [slot for slot in self._waiting if doomed(slot)]
        for slot in out:
            self._waiting.remove(slot)
        return out
