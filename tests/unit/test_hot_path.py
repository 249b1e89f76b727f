"""The shortcuts the hot path takes keep the semantics of the slow path they replace."""

from __future__ import annotations

import ast
import bisect
import gc
import importlib
import math
import os
import weakref
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, computed_field, field_serializer

from agentstream import Agent, Event, InputEvent, OutputEvent, RunnerContext, action
from agentstream.observability.histogram import HistogramCounts
from agentstream.runtime.action_state import ActionState, InMemoryActionStateStore
from agentstream.runtime.memory import MemoryStore, StoreMemoryObject
from agentstream.serde import encode_event, pack_event, unpack_event
from agentstream.testing import LocalRunner


class Inner(BaseModel):
    n: int


class Plain(Event):
    text: str
    inner: Inner
    tags: set[str]


class Shouting(Event):
    text: str

    @field_serializer("text")
    def _upper(self, text: str) -> str:
        return text.upper()


class Hidden(Event):
    text: str
    secret: str = Field(default="s", exclude=True)


class Computed(Event):
    text: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def length(self) -> int:
        return len(self.text)


@pytest.mark.parametrize(
    "event",
    [
        Plain(text="a", inner=Inner(n=1), tags={"x"}, id="e", parent_id="p", extra_field=3),
        Shouting(text="quiet", id="e"),
        Hidden(text="shown", secret="kept out", id="e"),
        Computed(text="abc", id="e"),
    ],
    ids=["plain", "field-serializer", "excluded-field", "computed-field"],
)
def test_packed_events_carry_what_model_dump_gives(event: Event) -> None:
    """Scenario: events with and without customized serialization are packed.
    We expect: unpacking yields the class's model_validate of its model_dump, whichever
    path packed it (fields as stored for plain classes, model_dump otherwise)."""
    back = unpack_event(pack_event(event))
    expected = type(event).model_validate(event.model_dump(mode="python"))
    assert type(back) is type(event)
    assert back.model_dump() == expected.model_dump()
    assert encode_event(back)["attributes"] == encode_event(expected)["attributes"]


def test_field_serializer_is_applied_when_packing() -> None:
    back = unpack_event(pack_event(Shouting(text="quiet")))
    assert isinstance(back, Shouting) and back.text == "QUIET"


def test_memory_dump_is_never_changed_by_later_writes() -> None:
    """Scenario: the key record holds the memory dumped at an input's end; the next input
    writes. We expect: the dumped snapshot (what a crash would restart from) is unchanged,
    and a rolled-back write leaves the store as it was."""
    store = MemoryStore("short")
    writes: list[Any] = []
    memory = StoreMemoryObject(store, "", writes.append, lambda: None)
    memory.set("a", 1)
    memory.set("n.b", [1, 2])
    dumped = store.dump()
    assert dumped is not None and MemoryStore("short").dump() is None  # empty: nothing kept
    frozen = {"values": dict(dumped["values"]), "objects": list(dumped["objects"])}

    again = MemoryStore("short", dumped)
    view = StoreMemoryObject(again, "", writes.append, lambda: None)
    before = again.snapshot()
    view.set("a", 2)
    view.new_object("n", overwrite=True)
    assert dumped == frozen
    assert again.values == {"a": 2} and again.objects == {"n"}
    again.restore(before)
    assert again.values == {"a": 1, "n.b": [1, 2]} and again.objects == {"n"}
    assert again.dump() is dumped  # unchanged: the loaded snapshot is handed back


def test_memory_keeps_its_own_copy_of_mutable_values() -> None:
    store = MemoryStore("short")
    memory = StoreMemoryObject(store, "", lambda update: None, lambda: None)
    items = [1, 2]
    memory.set("items", items)
    items.append(3)
    assert memory.get("items") == [1, 2]


def test_pruning_walks_only_what_it_drops() -> None:
    """Scenario: a key with many inputs; prune in order, then one written below the floor.
    We expect: exactly the records up to each pruned seq are gone, none of the others."""
    store = InMemoryActionStateStore()
    done = ActionState(True)
    for seq in range(1, 11):
        store.put("k", seq, "a", f"e{seq}", done)
    store.prune("k", 3)
    assert sorted(s for _, s, _, _ in store.entries()) == list(range(4, 11))
    store.put("k", 2, "a", "again", done)  # a replay with a fresh key state
    store.prune("k", 5)
    assert sorted(s for _, s, _, _ in store.entries()) == list(range(6, 11))
    store.prune("k", 10)
    assert len(store) == 0 and store.entries() == []


class Counting(Agent):
    @action(InputEvent)
    def count(event: InputEvent, ctx: RunnerContext) -> None:
        memory = ctx.short_term_memory
        memory.set("n", (memory.get("n") or 0) + 1)
        ctx.sensory_memory.set("seen", event.input)
        ctx.send_event(OutputEvent(output=memory.get("n")))


def test_a_processed_input_leaves_no_reference_cycles() -> None:
    """Scenario: inputs whose action uses both memories, with the cycle collector off.
    We expect: nothing for the collector to find afterwards (contexts and their memory
    views are freed by reference counting, which keeps the collector off the hot path)."""
    runner = LocalRunner(Counting(), auto_prune=True)
    runner.run([("k", 0)])  # warm up: imports, caches, the first event loop
    gc.collect()
    gc.disable()
    try:
        outputs = runner.run([(f"k{i % 3}", i) for i in range(30)])
        found = gc.collect()
    finally:
        gc.enable()
    assert [o for _, o in outputs][-3:] == [10, 10, 10]
    assert found < 30, f"{found} objects in reference cycles after 30 inputs"


class CountingLookups(InMemoryActionStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.most_held = 0

    def get(self, key: Any, seq: int, action: str, event_id: str) -> ActionState | None:
        self.lookups += 1
        return super().get(key, seq, action, event_id)

    def put(self, key: Any, seq: int, action: str, event_id: str, state: ActionState) -> None:
        super().put(key, seq, action, event_id, state)
        self.most_held = max(self.most_held, len(self))


class Relay(Agent):
    @action(InputEvent)
    def first(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(Plain(text=str(event.input), inner=Inner(n=1), tags=set()))

    @action(Plain)
    def second(event: Plain, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.text))


@pytest.mark.no_always_replay("it counts record lookups; the replay check adds one per action")
def test_fresh_inputs_skip_lookups_and_replays_still_find_their_records() -> None:
    """Scenario: inputs run on an empty action state store, then the same inputs on a new
    runner over that store. We expect: no record is looked up for inputs that never ran
    (nothing can be recorded for them), and the re-run replays every action from its
    record: each of its lookups finds one, and the outputs are the same."""
    store = CountingLookups()
    inputs = [("a", 1), ("b", 2), ("a", 3)]
    first = LocalRunner(Relay(), store).run(inputs)
    assert store.lookups == 0

    runner = LocalRunner(Relay(), store)
    assert runner.run(inputs) == first
    assert store.lookups == 6  # two actions per input, each found its record
    replayed = runner.metrics.registry.get_sample_value(
        "agentstream_actions_replayed_total", {"action": "second"}
    )
    assert replayed == 3


def test_auto_prune_drops_each_input_state_as_it_finishes() -> None:
    """Scenario: 20 inputs over 2 keys with auto_prune. We expect: the store never holds
    more than the records of the inputs in flight (one per key at a time, two actions
    each), and nothing once the run is over."""
    store = CountingLookups()
    runner = LocalRunner(Relay(), store, auto_prune=True)
    outputs = runner.run([(f"k{i % 2}", i) for i in range(20)])
    assert len(outputs) == 20
    assert store.most_held <= 2
    assert len(store) == 0


@pytest.mark.skipif(
    os.environ.get("AGENTSTREAM_EXPECT_COMPILED") != "1",
    reason="the compiled build is checked by `make test-compiled`",
)
def test_the_compiled_runtime_is_the_one_running() -> None:
    """Scenario: the suite runs against the wheel built with mypyc (``make test``'s second
    run). We expect: the hot-path modules are the compiled ones, so that run tests them
    and not the plain sources beside them; ``adopt`` stays a Python generator."""
    from agentstream.runtime import adopt

    setup = ast.parse((Path(__file__).parents[2] / "setup.py").read_text())
    (compiled,) = (
        ast.literal_eval(node.value)
        for node in setup.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED"
    )
    assert len(compiled) >= 5
    for name in compiled:
        module = importlib.import_module(name.removesuffix(".py").replace("/", "."))
        assert module.__file__ is not None and module.__file__.endswith(".so"), module.__file__
    assert adopt.__file__ is not None and adopt.__file__.endswith(".py")


class Tagged(OutputEvent):
    tag: str


class Carries(Agent):
    @action(InputEvent)
    def out(event: InputEvent, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=Inner(n=event.input)))
        ctx.send_event(OutputEvent(output=event.input, note="extra"))
        ctx.send_event(Tagged(output=event.input, tag="sub"))


def test_output_events_are_the_events_the_actions_sent() -> None:
    """Scenario: an action sends a plain OutputEvent whose output is a pydantic model, one
    with an extra attribute and one of a subclass. We expect: the runner's output events
    equal the sent ones, with the very output object (not a serialized copy), the extra
    attribute and the subclass kept."""
    runner = LocalRunner(Carries())
    outputs = runner.run([("k", 7)])
    plain, extra, tagged = runner.output_events
    assert plain.output is outputs[0][1] and plain.output == Inner(n=7)
    assert plain.id is not None and plain.parent_id == "input-0"
    assert (
        plain.model_dump()
        == OutputEvent(output=Inner(n=7), id=plain.id, parent_id="input-0").model_dump()
    )
    assert extra.note == "extra"  # type: ignore[attr-defined]
    assert isinstance(tagged, Tagged) and tagged.tag == "sub"
    assert len({plain.id, extra.id, tagged.id}) == 3


def test_a_dropped_runner_is_freed_at_once() -> None:
    """Scenario: a runner that processed inputs is dropped, with the cycle collector off.
    We expect: it is freed by reference counting, with its agent and all the state it
    kept (the metrics' hooks must not point back at the operator: that cycle kept a
    dropped runner's state alive until a full collection, which then cost the next run
    seconds)."""
    agent = Counting()
    alive = weakref.ref(agent)
    runner = LocalRunner(agent)
    runner.run([(f"k{i % 3}", i) for i in range(30)])
    runner.metrics.registry.get_sample_value("agentstream_busy_keys")  # the hooks ran
    gc.collect()
    gc.disable()
    try:
        del agent, runner
        assert alive() is None, "the runner's agent outlived the runner"
    finally:
        gc.enable()


@given(
    bounds=st.lists(st.floats(allow_nan=False, allow_infinity=False), unique=True, max_size=12),
    values=st.lists(st.floats(), max_size=20),
)
def test_histogram_counts_land_in_the_buckets_bisect_picks(
    bounds: list[float], values: list[float]
) -> None:
    edges = (*sorted(bounds), math.inf)  # as metrics normalizes them
    counts = HistogramCounts(edges)
    expected = [0] * len(edges)
    for value in values:
        counts.observe(value)
        expected[min(bisect.bisect_left(edges, value), len(edges) - 1)] += 1
    assert counts.counts == expected
