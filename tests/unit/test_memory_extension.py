"""Appending to a list in memory records the appended items only (issue 15, ``chat``).

An agent that keeps a conversation reads its history, appends a message and sets it back.
The update is recorded as an extension of the list memory held, so its cost (the record,
and the store's write) follows the message, not the history.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.errors import SerializationError
from agentstream.runtime.memory import MemoryStore, MemoryUpdate, StoreMemoryObject
from agentstream.runtime.records import InMemoryKeyState, InputRecord, KeyRecord
from agentstream.testing import InMemoryActionStateStore, LocalRunner


def _view(store: MemoryStore) -> tuple[StoreMemoryObject, list[MemoryUpdate]]:
    updates: list[MemoryUpdate] = []
    return StoreMemoryObject(store, "", updates.append, lambda: None), updates


def test_appending_records_the_appended_items_only() -> None:
    store = MemoryStore("short", {"values": {"history": ["a" * 1000] * 100}, "objects": []})
    memory, updates = _view(store)
    history = memory.get("history")
    history.append("hello")
    memory.set("history", history)
    assert updates == [("ext", "short", "history", [100, ["hello"]])]
    assert memory.get("history") == ["a" * 1000] * 100 + ["hello"]
    assert store.extended == {"history": 100}
    assert store.touched == {"history"}


def test_a_history_of_dicts_read_back_and_appended_is_an_extension() -> None:
    turns = [{"role": "user", "content": f"q{i}"} for i in range(3)]
    store = MemoryStore("short", {"values": {"chat": turns}, "objects": []})
    memory, updates = _view(store)
    history = memory.get("chat")  # copies of the dicts, equal but not the same objects
    history += [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q3"}]
    memory.set("chat", history)
    assert updates == [("ext", "short", "chat", [3, history[3:]])]
    assert memory.get("chat") == history


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h: h.__setitem__(0, "changed"), "an item before the end changed"),
        (lambda h: h.__setitem__(0, 1.0), "an equal item of another type (1.0 for 1)"),
        (lambda h: h.pop(0), "an item removed"),
    ],
)
def test_a_list_changed_before_its_end_is_set_whole(change: Any, why: str) -> None:
    store = MemoryStore("short", {"values": {"h": [1, 2]}, "objects": []})
    memory, updates = _view(store)
    history = memory.get("h")
    change(history)
    history += [3, 4]
    memory.set("h", history)
    assert updates == [("set", "short", "h", history)], why
    assert type(memory.get("h")[0]) is type(history[0])
    assert store.extended == {}


def test_an_equal_item_of_another_type_inside_a_dict_is_set_whole() -> None:
    store = MemoryStore("short", {"values": {"h": [{"n": 1, "tags": ["a"]}]}, "objects": []})
    memory, updates = _view(store)
    memory.set("h", [{"n": True, "tags": ["a"]}, {}])  # True == 1
    assert updates[-1][0] == "set" and memory.get("h")[0]["n"] is True
    memory.set("h", [{"n": True, "tags": ["a"]}, {}, {"n": 2}])  # now the same: appended
    assert updates[-1] == ("ext", "short", "h", [2, [{"n": 2}]])


def test_an_extension_then_a_set_is_no_longer_an_extension() -> None:
    store = MemoryStore("short", {"values": {"h": [1]}, "objects": []})
    memory, _ = _view(store)
    memory.set("h", [1, 2])
    assert store.extended == {"h": 1}
    memory.set("h", [0])
    memory.set("h", [0, 5])  # extends the list set above: the stored one is not its start
    assert store.extended == {}


def test_appended_items_are_checked_and_copied_like_a_set() -> None:
    store = MemoryStore("short", {"values": {"h": ["x"]}, "objects": []})
    memory, updates = _view(store)
    with pytest.raises(SerializationError, match=r"h\[1:\]"):
        memory.set("h", ["x", (1, 2)])  # a tuple would come back as a list
    assert updates == [] and memory.get("h") == ["x"]
    item = {"n": 1}
    memory.set("h", ["x", item])
    item["n"] = 2  # changing the caller's object later does not change memory
    assert memory.get("h") == ["x", {"n": 1}]


def test_an_extension_replays_over_the_inputs_own_later_writes() -> None:
    """A crash after the input's finish was partly stored: memory already holds the list
    the input ended with; replaying its extensions in order gives that list again."""
    start = MemoryStore("short", {"values": {"h": ["a"]}, "objects": []})
    memory, updates = _view(start)
    memory.set("h", ["a", "b"])
    memory.set("h", ["a", "b", "c"])
    final = start.values["h"]
    over_final = MemoryStore("short", {"values": {"h": final}, "objects": []})
    for update in updates:
        over_final.apply(update, replay=True)
    assert over_final.values["h"] == final == ["a", "b", "c"]
    assert over_final.extended == {"h": 1}


class Noted(Event):
    n: int


class Chat(Agent):
    """Two actions each append to the history; ``reset`` replaces it with a shorter one
    in between, and the second append extends what ``reset`` left."""

    def __init__(self, calls: list[str], reset: bool):
        super().__init__()
        self.add_resource("calls", calls)
        self.add_resource("reset", reset)

    @action(InputEvent)
    def ask(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.get_resource("calls").append("ask")
        memory = ctx.short_term_memory
        history = memory.get("history") or []
        memory.set("history", [*history, f"q:{event.input}"])
        ctx.send_event(Noted(n=len(history) + 1))

    @action(Noted)
    def answer(event: Noted, ctx: RunnerContext) -> None:
        ctx.get_resource("calls").append("answer")
        memory = ctx.short_term_memory
        history = memory.get("history")
        if ctx.get_resource("reset"):
            history = history[-1:]
            memory.set("history", history)
        memory.set("history", [*history, f"a:{event.n}"])
        ctx.send_event(OutputEvent(output=len(history) + 1))


@pytest.mark.parametrize("reset", [False, True], ids=["appends", "set-between-appends"])
@pytest.mark.no_always_replay("counts the runs of each action, which the replay check repeats")
def test_a_finish_cut_in_half_replays_extensions_to_the_same_memory(reset: bool) -> None:
    """Scenario: the key's history was stored by the input's finish, but the key record
    that finishes it was not (a crash between the two); a new worker resumes the input.
    We expect: both actions replay from their records over the stored history (which
    already holds the input's appends), and the history is the one the input ended with."""
    calls: list[str] = []
    key_state = InMemoryKeyState()
    action_states = InMemoryActionStateStore(serialize=True)
    first = LocalRunner(Chat(calls, reset), key_state=key_state, action_state_store=action_states)
    assert first.run([InputRecord("k", "one", "in-1")]) is not None
    record = InputRecord("k", "two", "in-2")
    first.run([record])
    finished = first.memory("k")
    calls.clear()

    key_state.put("k", KeyRecord(seq=2, current=record))  # the finish never got stored

    async def resume() -> LocalRunner:
        second = LocalRunner(
            Chat(calls, reset), key_state=key_state, action_state_store=action_states
        )
        assert second.operator.resume(["k"]) == 1
        await second.operator.drain()
        return second

    second = asyncio.run(resume())
    assert calls == [], "a completed action ran again"
    assert second.memory("k") == finished
    expected = ["q:two", "a:3"] if reset else ["q:one", "a:1", "q:two", "a:3"]
    assert finished["history"] == expected
