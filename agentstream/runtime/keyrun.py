"""The in-memory state of one key's current input (rebuilt from state after a crash)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any

from agentstream.api.agent import Action
from agentstream.api.events import Event
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, Snapshot, apply_updates
from agentstream.runtime.records import InputRecord

__all__ = ["KeyRun", "Verification"]


class KeyRun:
    """One input of one key, while it runs.

    ``slot`` is the key's identity in state (the service scopes it to the input partition:
    ``(partition, key)``); ``key`` is the record's key, what actions and outputs see.
    Built per input, so everything not every input needs (sensory memory, the wake-up
    future, the routing tag, the list of recent event types) is made on first use.
    """

    __slots__ = ("_sensory", "_tag", "aborted", "attempt", "fresh", "in_flight", "key",
                 "recent", "record", "replayed", "sent", "seq", "short", "slot", "tasks",
                 "waiter")  # fmt: skip

    def __init__(
        self,
        slot: Hashable,
        seq: int,
        record: InputRecord,
        attempt: int,
        short: MemoryStore,
        fresh: bool,
    ):
        self.slot = slot
        self.key = record.key
        self.seq = seq
        self.record = record
        self.attempt = attempt
        self.short = short
        self.fresh = fresh  # no action run of this input was recorded before this attempt
        self._sensory: MemoryStore | None = None
        self._tag: str | None = None
        self.tasks: deque[tuple[Action, Event]] = deque()
        self.in_flight: set[str] | None = None  # ids of routed events not yet back
        self.waiter: asyncio.Future[None] | None = None
        self.aborted = False
        self.sent = 0  # events the input's actions sent (bounded: a loop is stopped)
        self.recent: list[str] | None = None  # type names of the last ones, near the bound
        self.replayed: set[str] | None = None  # ids of events re-sent by replayed actions

    @property
    def sensory(self) -> MemoryStore:
        if self._sensory is None:
            self._sensory = MemoryStore("sensory")
        return self._sensory

    def tag(self, incarnation: str) -> str:
        if self._tag is None:
            self._tag = f"{self.seq}:{incarnation}:{self.attempt}"
        return self._tag

    def snapshot(self) -> tuple[Snapshot, Snapshot | None]:
        sensory = self._sensory
        return self.short.snapshot(), None if sensory is None else sensory.snapshot()

    def apply(self, updates: Iterable[MemoryUpdate]) -> None:
        """Re-apply an action run's recorded memory updates."""
        apply_updates({"short": self.short, "sensory": self.sensory}, updates)

    def restore(self, snapshot: tuple[Snapshot, Snapshot | None]) -> None:
        short, sensory = snapshot
        self.short.restore(short)
        if sensory is None:
            self._sensory = None
        else:
            self.sensory.restore(sensory)

    def abort(self) -> None:
        """Stop the input: nothing queued runs, no routed event is waited for."""
        self.aborted = True
        self.tasks.clear()
        self.in_flight = None
        self.wake()

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Verification:
    """Copies of a run's memory for the "always replay" check."""

    __slots__ = ("key", "sensory", "short")

    def __init__(self, key: Any, short: MemoryStore, sensory: MemoryStore):
        self.key = key
        self.short = short
        self.sensory = sensory
