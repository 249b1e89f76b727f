"""Durable call results are recorded as data, never pickled (issue 11, defect 3)."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from pydantic import BaseModel

from agentstream import (
    ActionExecutionError,
    Agent,
    InputEvent,
    OutputEvent,
    RunnerContext,
    SerializationError,
    action,
)
from agentstream.runtime import ActionState, CallRecord
from agentstream.runtime.durable import _digest, fn_id
from agentstream.testing import InMemoryActionStateStore, LocalRunner

EXECUTED: list[str] = []


def _mark(what: str) -> str:
    EXECUTED.append(what)
    return what


class _Exploit:
    """Unpickling this runs ``_mark("PWNED")`` (a harmless stand-in for ``os.system``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_mark, ("PWNED",))


class Answer(BaseModel):
    text: str
    score: float


class Renamed(BaseModel):
    """The same schema as ``Answer``, under the name it has after a rename."""

    text: str
    score: float


@dataclasses.dataclass
class Point:
    x: int
    y: int


CALLS: list[Any] = []


def lookup(question: str) -> Answer:
    CALLS.append(question)
    return Answer(text=f"about {question}", score=0.5)


def calls_agent(fn: Callable[..., Any], crash: dict[str, bool]) -> Agent:
    """One action: a durable call to ``fn``, then a crash while ``crash["on"]``."""

    class A(Agent):
        @action(InputEvent)
        def ask(event: InputEvent, ctx: RunnerContext) -> None:
            result = ctx.durable_execute(fn, event.input)
            if crash["on"]:
                raise RuntimeError("crash after the durable call")
            ctx.send_event(OutputEvent(output=result))

    return A()


def crash_then_recover(fn: Callable[..., Any], store: InMemoryActionStateStore) -> Any:
    """Run once with a crash after the call, then again; returns the recovered output."""
    crash = {"on": True}
    with pytest.raises(ActionExecutionError):
        LocalRunner(calls_agent(fn, crash), action_state_store=store).run([("k", "q")])
    crash["on"] = False
    runner = LocalRunner(calls_agent(fn, crash), action_state_store=store)
    runner.run([("k", "q")])
    [event] = runner.output_events
    return event.output


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()
    EXECUTED.clear()


def test_a_pickle_payload_in_a_recorded_result_is_never_unpickled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Scenario: someone with write access to the changelog rewrites a durable call's
    recorded result as a pickle whose loading runs code; the worker restarts and replays.
    We expect: the payload is not executed; the record cannot be read back as a result,
    so the call runs again (with a warning) and the input completes."""
    store = InMemoryActionStateStore(serialize=True)
    crafted = CallRecord(fn_id(lookup), _digest(("q",), {}), "ok", result=pickle.dumps(_Exploit()))
    store.put("k", 1, "ask", "input-0", ActionState(completed=False, calls=(crafted,)))
    with caplog.at_level(logging.WARNING, logger="agentstream.runtime.context"):
        runner = LocalRunner(calls_agent(lookup, {"on": False}), action_state_store=store)
        out = runner.run([("k", "q")])
    assert EXECUTED == [], "the pickle payload ran"
    assert out == [("k", Answer(text="about q", score=0.5))]
    assert CALLS == ["q"], "the unreadable record's call runs again"
    assert "cannot be read back" in caplog.text


def test_an_unversioned_record_with_a_pickled_result_is_read_without_unpickling() -> None:
    """Scenario: an action-state record in the old unversioned layout (a bare msgpack
    array, results pickled) carries a pickle payload that runs code when loaded.
    We expect: it decodes (the layout migrates) without running it; its calls are dropped,
    so they run again."""
    from agentstream.runtime.records import decode_record

    call = [fn_id(lookup), _digest(("q",), {}), "ok", pickle.dumps(_Exploit()), None, None]
    legacy = msgpack.packb([False, [["set", "short", "n", 1]], [], [call]])
    state = decode_record(ActionState, legacy)
    assert EXECUTED == []
    assert state == ActionState(False, (("set", "short", "n", 1),), (), ())


def test_a_pydantic_model_result_round_trips() -> None:
    """Scenario: a durable function returns a pydantic model; the action crashes after the
    call and runs again over the recorded state (serialized to bytes like the changelog).
    We expect: the call is served from its record as an equal model; it ran once."""
    store = InMemoryActionStateStore(serialize=True)
    assert crash_then_recover(lookup, store) == Answer(text="about q", score=0.5)
    assert CALLS == ["q"]


def test_a_renamed_result_class_is_read_back_by_the_declared_return_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Scenario: a durable call's result (class ``Answer``) is recorded, then the class is
    renamed (``Renamed``) before the recovery; the function declares the new name.
    We expect: the record is read back as the new class, the call does not run again and
    the input is not dead-lettered."""
    store = InMemoryActionStateStore(serialize=True)
    crash = {"on": True}
    with pytest.raises(ActionExecutionError):
        LocalRunner(calls_agent(lookup, crash), action_state_store=store).run([("k", "q")])

    def renamed(question: str) -> Renamed:
        raise AssertionError("a recorded call ran again")

    renamed.__qualname__ = lookup.__qualname__  # the same durable function, edited
    monkeypatch.delattr(sys.modules[__name__], "Answer")  # the old name is gone
    crash["on"] = False
    runner = LocalRunner(calls_agent(renamed, crash), action_state_store=store)
    runner.run([("k", "q")])
    [event] = runner.output_events
    assert event.output == Renamed(text="about q", score=0.5)
    assert CALLS == ["q"]


def _model_without_annotation(question: str):  # type: ignore[no-untyped-def]
    CALLS.append(question)
    return Answer(text=question, score=1.0)


def test_a_model_without_return_type_is_read_back_by_its_own_class() -> None:
    """Scenario: a durable function without a return annotation returns a module-level
    pydantic model. We expect: it is recorded by its own class and read back equal."""
    store = InMemoryActionStateStore(serialize=True)
    assert crash_then_recover(_model_without_annotation, store) == Answer(text="q", score=1.0)
    assert CALLS == ["q"]


def _point(question: str) -> tuple[Point, tuple[int, str]]:
    CALLS.append(question)
    return Point(1, 2), (3, question)


def test_dataclasses_and_tuples_round_trip_by_the_declared_type() -> None:
    store = InMemoryActionStateStore(serialize=True)
    assert crash_then_recover(_point, store) == (Point(1, 2), (3, "q"))
    assert CALLS == ["q"]


def test_plain_data_round_trips_without_a_return_type() -> None:
    def plain(question):  # type: ignore[no-untyped-def]
        CALLS.append(question)
        return {"q": question, "n": [1, 2.5, None, True, b"\x00\xff"]}

    store = InMemoryActionStateStore(serialize=True)
    assert crash_then_recover(plain, store) == {"q": "q", "n": [1, 2.5, None, True, b"\x00\xff"]}
    assert CALLS == ["q"]


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"a", "b"}, "not plain data"),
        ((1, 2), "not plain data"),
        (object(), "not plain data"),
        (2**70, "cannot be serialized"),
    ],
    ids=["set", "tuple", "object", "huge-int"],
)
def test_an_unrecordable_result_fails_at_the_call_naming_the_function(
    result: Any, why: str
) -> None:
    """Scenario: a durable function without a return type returns a value that would not
    come back as it is (a set, a tuple, an arbitrary object, an int msgpack cannot hold).
    We expect: the call fails at once with SerializationError naming the function and
    the fix, not later when a recovery reads the record."""

    def unrecordable(question):  # type: ignore[no-untyped-def]
        return result

    with pytest.raises(ActionExecutionError) as caught:
        LocalRunner(calls_agent(unrecordable, {"on": False})).run([("k", "q")])
    error = caught.value.cause
    assert isinstance(error, SerializationError)
    message = str(error)
    assert fn_id(unrecordable) in message
    assert why in message
    assert "return type" in message


def test_a_result_that_does_not_match_the_declared_type_fails_at_the_call() -> None:
    def wrong(question: str) -> int:
        return "not an int"  # type: ignore[return-value]

    with pytest.raises(ActionExecutionError) as caught:
        LocalRunner(calls_agent(wrong, {"on": False})).run([("k", "q")])
    assert isinstance(caught.value.cause, SerializationError)
    assert fn_id(wrong) in str(caught.value.cause)


def test_a_local_class_without_return_type_fails_at_the_call() -> None:
    class Local(BaseModel):
        x: int

    def local(question):  # type: ignore[no-untyped-def]
        return Local(x=1)

    with pytest.raises(ActionExecutionError) as caught:
        LocalRunner(calls_agent(local, {"on": False})).run([("k", "q")])
    assert "cannot be found by name" in str(caught.value.cause)


def test_a_class_named_by_a_record_is_never_imported(tmp_path: Path) -> None:
    """Scenario: a crafted record names a class in a module that is not imported (whose
    import would run code), for a function that declares no return type.
    We expect: the module is not imported; the call runs again instead."""
    (tmp_path / "evil_result_module.py").write_text(
        "from tests.unit.test_durable_results import _mark\n_mark('IMPORTED')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:

        def plain(question):  # type: ignore[no-untyped-def]
            CALLS.append(question)
            return question

        store = InMemoryActionStateStore(serialize=True)
        blob = msgpack.packb([{"x": 1}, "evil_result_module:Thing"])
        crafted = CallRecord(fn_id(plain), _digest(("q",), {}), "ok", result=blob)
        store.put("k", 1, "ask", "input-0", ActionState(completed=False, calls=(crafted,)))
        out = LocalRunner(calls_agent(plain, {"on": False}), action_state_store=store).run(
            [("k", "q")]
        )
    finally:
        sys.path.remove(str(tmp_path))
    assert "evil_result_module" not in sys.modules
    assert EXECUTED == []
    assert out == [("k", "q")] and CALLS == ["q"]


class _SettingsBase(BaseModel):
    """Stands for pydantic-settings' BaseSettings (not installed here)."""


_SettingsBase.__module__ = "pydantic_settings.main"


class AppSettings(_SettingsBase):
    secret: str = "from the environment"


def test_a_record_names_only_schema_classes_and_never_settings() -> None:
    """pydantic-settings classes read the environment when built: never named by data;
    neither is anything but a pydantic model or a dataclass."""
    from agentstream.runtime.results import find_class

    assert find_class(f"{__name__}:AppSettings") is None
    assert find_class(f"{__name__}:Renamed") is Renamed
    assert find_class(f"{__name__}:Point") is Point
    assert find_class(f"{__name__}:_mark") is None, "a function is not a schema class"
    assert find_class(f"{__name__}:Renamed.__class__") is None
    assert find_class("os:system") is None


def test_recorded_state_bytes_carry_the_record_version() -> None:
    from agentstream.runtime.records import RECORD_VERSION, decode_record, encode_record

    state = ActionState(True, (("set", "short", "n", 1),), (b"e",), ())
    data = encode_record(state)
    assert data[0] == RECORD_VERSION
    assert decode_record(ActionState, data) == state
    with pytest.raises(SerializationError, match="version 9"):
        decode_record(ActionState, b"\x09" + data[1:])


@dataclasses.dataclass(eq=False)
class Reading:
    value: float
    tags: tuple[str, ...]


def _reading(question: str) -> Reading:
    CALLS.append(question)
    return Reading(0.5, ("a", "b"))


def test_values_equal_only_by_their_dump_round_trip() -> None:
    """A dataclass without ``__eq__`` is recorded (compared by its dump), and so is NaN."""
    from agentstream.runtime.results import decode_result, encode_result

    store = InMemoryActionStateStore(serialize=True)
    back = crash_then_recover(_reading, store)
    assert isinstance(back, Reading) and back.value == 0.5 and back.tags == ("a", "b")
    assert CALLS == ["q"]
    nan = decode_result(_reading, encode_result(_reading, Reading(float("nan"), ())))
    assert nan.value != nan.value
    [plain] = decode_result(len, encode_result(len, [float("nan")]))
    assert plain != plain


def _loose(question: str) -> dict:  # type: ignore[type-arg]
    return {"pair": (1, 2)}


def test_a_tuple_inside_a_loosely_typed_result_fails_at_the_call() -> None:
    """Scenario: the declared type (``-> dict``) does not say the inner value is a tuple.
    We expect: the call fails, since it would come back as a list."""
    with pytest.raises(ActionExecutionError) as caught:
        LocalRunner(calls_agent(_loose, {"on": False})).run([("k", "q")])
    assert "read back as" in str(caught.value.cause)
