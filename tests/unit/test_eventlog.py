"""Tests of the event log: records, file logger, filters, flush policies, registry, reading."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import to_json

from agentstream.api.events import Event, InputEvent, OutputEvent
from agentstream.errors import ConfigurationError
from agentstream.observability import eventlog
from agentstream.observability.eventlog import (
    EventLogFormatError,
    EventLogger,
    EventLoggerConfig,
    EventLogRecord,
    FileEventLogger,
    NullEventLogger,
    create_event_logger,
    parse_event_log_record,
    read_event_log,
    register_event_logger,
    registered_event_logger_types,
)
from agentstream.serde import decode_event


class ToolCalled(Event):
    tool: str
    arguments: dict[str, Any] = {}


class Answer(Event):
    text: str
    score: float = 0.0


T0 = 1_714_564_800.25


def record(
    event: Event, *, seq: int = 1, key: Any = "k1", action: str | None = "plan"
) -> EventLogRecord:
    return EventLogRecord(time=T0, key=key, seq=seq, event=event, action=action)


def file_config(tmp_path: Path, **kwargs: Any) -> EventLoggerConfig:
    return EventLoggerConfig(path=str(tmp_path / "logs" / "events.jsonl"), **kwargs)


def log_path(config: EventLoggerConfig) -> Path:
    assert config.path is not None
    return Path(config.path)


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- records ------------------------------------------------------------------------------


def test_record_json_dict_has_the_documented_fields() -> None:
    event = ToolCalled(id="e2", parent_id="e1", source_timestamp=1234, tool="search")
    data = record(event).to_json_dict()
    assert data == {
        "time": "2024-05-01T12:00:00.250000Z",
        "key": "k1",
        "seq": 1,
        "event_type": ToolCalled.type_name(),
        "id": "e2",
        "parent_id": "e1",
        "action": "plan",
        "source_timestamp": 1234,
        "payload": {"tool": "search", "arguments": {}},
    }


def test_non_json_values_are_converted_or_repr() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    event = Event(when=b"bytes", items={1, 2}, thing=Opaque(), bad=b"\xff", nan=float("nan"))
    payload = record(event, key=("a", 1)).to_json_dict()
    assert payload["key"] == ["a", 1]
    body = payload["payload"]
    assert body["when"] == "bytes"
    assert sorted(body["items"]) == [1, 2]
    assert body["thing"] == "<opaque>"
    assert body["bad"] == "_w=="  # not UTF-8: URL-safe base64
    assert body["nan"] == "NaN"
    json.dumps(payload, allow_nan=False)  # strictly valid JSON


def test_payload_truncated_above_limit() -> None:
    event = Answer(text="é" * 600)
    data = record(event).to_json_dict(max_payload_bytes=100)
    assert data["payload"]["truncated"] is True
    preview = data["payload"]["preview"]
    assert len(preview.encode("utf-8")) <= 100
    assert to_json(event.attributes()).decode() == '{"text":"' + "é" * 600 + '","score":0.0}'
    assert to_json(event.attributes()).decode().startswith(preview)
    small = record(Answer(text="short")).to_json_dict(max_payload_bytes=100)
    assert small["payload"] == {"text": "short", "score": 0.0}


# -- file logger and reading back --------------------------------------------------------


def test_round_trip_of_custom_events(tmp_path: Path) -> None:
    config = file_config(tmp_path, level="verbose")
    events = [
        record(InputEvent(id="i1", source_timestamp=10, input={"q": "hi"}), action=None),
        record(ToolCalled(id="e1", parent_id="i1", tool="search", arguments={"q": "x"})),
        record(Answer(id="e2", parent_id="e1", text="hello", score=0.5), action="answer"),
        record(Answer(id="e3", parent_id="e1", text="big", score=float("inf")), key=7),
        record(OutputEvent(id="o1", parent_id="e2", output="hello"), action="finish", seq=2),
    ]
    with FileEventLogger(config) as logger:
        for rec in events:
            logger.append(rec)
    read = list(read_event_log(log_path(config)))
    assert [type(r.event) for r in read] == [InputEvent, ToolCalled, Answer, Answer, OutputEvent]
    for original, back in zip(events, read, strict=True):
        assert back.event == original.event
        assert back.key == original.key
        assert back.seq == original.seq
        assert back.action == original.action
        assert back.time == pytest.approx(original.time, abs=1e-6)


def test_unknown_type_comes_back_generic_and_keeps_its_type_name(tmp_path: Path) -> None:
    line = json.dumps(
        {
            "time": "2024-05-01T12:00:00Z",
            "key": "k",
            "seq": 3,
            "event_type": "elsewhere.events.Mystery",
            "id": "m1",
            "parent_id": None,
            "action": "a",
            "source_timestamp": None,
            "payload": {"clue": 42, "event_type": "ignored"},
        }
    )
    rec = parse_event_log_record(line)
    assert type(rec.event) is Event
    assert rec.event.event_type == "elsewhere.events.Mystery"  # type: ignore[attr-defined]
    assert rec.event.clue == 42  # type: ignore[attr-defined]
    assert rec.time == 1_714_564_800.0

    # Logged again, a generic stand-in keeps the original type name (and reads back alike).
    again = rec.to_json_dict()
    assert again["event_type"] == "elsewhere.events.Mystery"
    assert again["payload"] == {"clue": 42}
    assert parse_event_log_record(json.dumps(again)).event == rec.event


def test_serde_generic_event_is_logged_under_its_original_type(tmp_path: Path) -> None:
    generic = decode_event({"type": "gone.Thing", "id": "g", "attributes": {"x": 1}})
    config = file_config(tmp_path, flush="always")
    logger = create_event_logger(config)
    logger.append(record(generic))
    (written,) = lines(log_path(config))
    assert written["event_type"] == "gone.Thing"
    assert written["payload"] == {"x": 1}
    logger.close()


def test_truncated_payload_reads_back_as_generic_event(tmp_path: Path) -> None:
    config = file_config(tmp_path, max_payload_bytes=32)
    with FileEventLogger(config) as logger:
        logger.append(record(Answer(id="a1", parent_id="p", text="x" * 100)))
        logger.append(record(Answer(id="a2", text="ok")))
    big, small = read_event_log(log_path(config))
    assert type(big.event) is Event
    assert big.event.id == "a1" and big.event.parent_id == "p"
    assert big.event.truncated is True  # type: ignore[attr-defined]
    assert big.event.event_type == Answer.type_name()  # type: ignore[attr-defined]
    assert big.event.preview.startswith('{"text":"xxx')  # type: ignore[attr-defined]
    assert type(small.event) is Answer


def test_verbose_level_keeps_full_payload(tmp_path: Path) -> None:
    config = file_config(tmp_path, level="verbose", max_payload_bytes=8)
    with FileEventLogger(config) as logger:
        logger.append(record(Answer(text="y" * 1000)))
    (back,) = read_event_log(log_path(config))
    assert back.event == Answer(text="y" * 1000)


def test_level_off_writes_nothing(tmp_path: Path) -> None:
    config = file_config(tmp_path, level="off", flush="always")
    with FileEventLogger(config) as logger:
        logger.append(record(Answer(text="x")))
    assert not log_path(config).exists()
    # No path is needed when nothing is written.
    FileEventLogger(EventLoggerConfig(level="off")).append(record(Answer(text="x")))


def test_file_logger_needs_a_path() -> None:
    with pytest.raises(ConfigurationError, match="path"):
        FileEventLogger(EventLoggerConfig())


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (set(), set(), {"ToolCalled", "Answer", "InputEvent"}),
        ({"Answer"}, set(), {"Answer"}),
        ({ToolCalled.type_name(), "InputEvent"}, set(), {"ToolCalled", "InputEvent"}),
        (set(), {"Answer"}, {"ToolCalled", "InputEvent"}),
        ({"Answer", "ToolCalled"}, {ToolCalled.type_name()}, {"Answer"}),
    ],
)
def test_include_and_exclude_filters(
    tmp_path: Path, include: set[str], exclude: set[str], expected: set[str]
) -> None:
    config = file_config(tmp_path, include_event_types=include, exclude_event_types=exclude)
    with FileEventLogger(config) as logger:
        logger.append(record(ToolCalled(tool="t")))
        logger.append(record(Answer(text="a")))
        logger.append(record(InputEvent(input=1), action=None))
    logged = {r.event.__class__.__name__ for r in read_event_log(log_path(config))}
    assert logged == expected


def test_filters_match_unknown_types_by_their_logged_name() -> None:
    generic = decode_event({"type": "gone.Thing", "attributes": {}})
    assert EventLoggerConfig(include_event_types=frozenset({"Thing"})).accepts(generic)
    assert EventLoggerConfig(include_event_types=frozenset({"gone.Thing"})).accepts(generic)
    assert not EventLoggerConfig(exclude_event_types=frozenset({"Thing"})).accepts(generic)
    assert not EventLoggerConfig(include_event_types=frozenset({"Event"})).accepts(generic)


def test_flush_always_makes_each_record_visible(tmp_path: Path) -> None:
    config = file_config(tmp_path, flush="always")
    logger = FileEventLogger(config)
    logger.open()
    logger.append(record(Answer(text="one")))
    assert len(lines(log_path(config))) == 1
    logger.append(record(Answer(text="two")))
    assert len(lines(log_path(config))) == 2
    logger.close()


def test_flush_on_close_only(tmp_path: Path) -> None:
    config = file_config(tmp_path, flush="close")
    logger = FileEventLogger(config)
    logger.open()
    logger.append(record(Answer(text="one")))
    assert lines(log_path(config)) == []
    logger.close()
    assert len(lines(log_path(config))) == 1


def test_flush_interval(tmp_path: Path) -> None:
    now = [1000.0]
    config = file_config(tmp_path, flush="interval", flush_interval_seconds=5.0)
    path = log_path(config)
    logger = FileEventLogger(config, clock=lambda: now[0])
    logger.open()
    logger.append(record(Answer(text="one")))
    assert lines(path) == []
    now[0] += 5.0
    logger.append(record(Answer(text="two")))
    assert len(lines(path)) == 2
    logger.append(record(Answer(text="three")))
    assert len(lines(path)) == 2
    logger.flush()
    assert len(lines(path)) == 3
    logger.close()


def test_append_reopens_lazily_and_appends_to_existing_file(tmp_path: Path) -> None:
    config = file_config(tmp_path, flush="always")
    logger = FileEventLogger(config)
    logger.append(record(Answer(text="one")))  # without open()
    logger.close()
    logger.append(record(Answer(text="two")))  # after close()
    logger.close()
    with FileEventLogger(config) as second:
        second.append(record(Answer(text="three")))
    texts = [r.event.text for r in read_event_log(log_path(config))]  # type: ignore[attr-defined]
    assert texts == ["one", "two", "three"]
    assert logger.records_written == 2


def test_io_errors_are_counted_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    logger = FileEventLogger(EventLoggerConfig(path=str(blocker / "events.jsonl")))
    with caplog.at_level(logging.WARNING, logger=eventlog.__name__):
        logger.append(record(Answer(text="one")))
        logger.append(record(Answer(text="two")))
        logger.flush()
        logger.close()
    assert logger.errors == 2
    assert logger.records_written == 0
    warnings = [r for r in caplog.records if r.name == eventlog.__name__]
    assert len(warnings) == 1
    assert "not-a-dir" in warnings[0].getMessage()
    with pytest.raises(OSError):
        logger.open()  # an explicit open() reports the problem


# -- reading -----------------------------------------------------------------------------


def test_invalid_lines_raise_with_location_or_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    good = json.dumps(record(Answer(text="ok")).to_json_dict())
    path.write_text(f"{good}\n\n{{not json\n{good}\n", encoding="utf-8")
    with pytest.raises(EventLogFormatError) as info:
        list(read_event_log(path))
    assert info.value.line_number == 3
    assert info.value.path == str(path)
    assert f"{path}:3" in str(info.value)
    assert len(list(read_event_log(path, skip_invalid=True))) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1]", "JSON object"),
        ('{"seq": 1, "time": "2024-01-01T00:00:00Z"}', "event_type"),
        ('{"event_type": "x", "seq": "1", "time": "2024-01-01T00:00:00Z"}', "seq"),
        ('{"event_type": "x", "seq": 1, "time": "yesterday"}', "time"),
        ('{"event_type": "x", "seq": 1, "time": 0, "payload": [1]}', "payload"),
    ],
)
def test_parse_rejects_malformed_records(line: str, message: str) -> None:
    with pytest.raises(EventLogFormatError, match=message):
        parse_event_log_record(line)


def test_payload_the_class_no_longer_accepts_comes_back_generic() -> None:
    line = json.dumps(
        {"event_type": Answer.type_name(), "seq": 1, "time": 0, "payload": {"score": 1}}
    )
    event = parse_event_log_record(line).event
    assert type(event) is Event
    assert event.event_type == Answer.type_name()  # type: ignore[attr-defined]
    assert event.score == 1  # type: ignore[attr-defined]


# -- configuration and registry ----------------------------------------------------------


def test_config_validation() -> None:
    with pytest.raises(ConfigurationError, match="level"):
        EventLoggerConfig(level="loud")
    with pytest.raises(ConfigurationError, match="flush policy"):
        EventLoggerConfig(flush="sometimes")
    with pytest.raises(ConfigurationError, match="flush_interval_seconds"):
        EventLoggerConfig(flush_interval_seconds=-1)
    with pytest.raises(ConfigurationError, match="include_event_types"):
        EventLoggerConfig(include_event_types="Answer")
    config = EventLoggerConfig(include_event_types={"A"}, properties={"x": 1})
    assert config.include_event_types == frozenset({"A"})
    assert hash(config) == hash(EventLoggerConfig(include_event_types=frozenset({"A"})))


class MemoryLogger:
    def __init__(self, config: EventLoggerConfig):
        self.config = config
        self.records: list[EventLogRecord] = []
        self.opened = False

    def open(self) -> None:
        self.opened = True

    def append(self, record: EventLogRecord) -> None:
        if self.config.accepts(record.event):
            self.records.append(record)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_custom_logger_is_registered_and_created_by_name() -> None:
    register_event_logger("test-memory", MemoryLogger)
    assert "test-memory" in registered_event_logger_types()
    config = EventLoggerConfig(type="test-memory", properties={"capacity": 10})
    logger = create_event_logger(config)
    assert isinstance(logger, MemoryLogger)
    assert isinstance(logger, EventLogger)
    assert logger.config.properties["capacity"] == 10
    logger.open()
    logger.append(record(Answer(text="hi")))
    assert [r.event for r in logger.records] == [Answer(text="hi")]


def test_builtin_loggers_are_registered(tmp_path: Path) -> None:
    assert {"file", "null"} <= set(registered_event_logger_types())
    assert isinstance(create_event_logger(file_config(tmp_path)), FileEventLogger)
    null = create_event_logger(EventLoggerConfig(type="null"))
    assert isinstance(null, NullEventLogger)
    null.append(record(Answer(text="dropped")))


def test_unknown_logger_type_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown event logger type 'kafkaa'.*'file'"):
        create_event_logger(EventLoggerConfig(type="kafkaa"))


def test_append_is_cheap_enough(tmp_path: Path) -> None:
    """Not a benchmark: guards against accidental per-record fsync or reopen."""
    config = file_config(tmp_path)
    with FileEventLogger(config) as logger:
        start = time.perf_counter()
        for i in range(2000):
            logger.append(record(Answer(text=f"t{i}"), seq=i))
        elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    assert len(lines(log_path(config))) == 2000


def test_concurrent_appends_write_whole_lines(tmp_path: Path) -> None:
    config = file_config(tmp_path, flush="always")
    logger = FileEventLogger(config)

    def work(worker: int) -> None:
        for i in range(200):
            logger.append(record(Answer(text=f"{worker}-{i}" * 20), seq=i))

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "writer thread did not finish within 30s"
    logger.close()
    assert len(list(read_event_log(log_path(config)))) == 800
