"""The CLI fits Kafka habits (issue 16): send from stdin, tail's options, one-line errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from agentstream import __version__
from agentstream.service.broker import ensure_topics, free_port
from agentstream.service.cli import main
from tests.brokers import Broker


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The CLI sets log levels (root, aiokafka) as a process would; tests run in-process."""
    loggers = [logging.getLogger(), logging.getLogger("aiokafka")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def _cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


@pytest.fixture
def topic(broker: Broker, unique_name: Callable[[str], str]) -> str:
    name = unique_name("cli")
    asyncio.run(ensure_topics(broker.bootstrap, {name: 3}))
    return name


def _tail(broker: Broker, topic: str, *flags: str) -> list[str]:
    result = _cli("tail", "--topic", topic, "--broker", broker.url, "--timeout", "1", *flags)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_send_reads_stdin_with_keys_and_headers_and_prints_where_it_went(
    broker: Broker, topic: str
) -> None:
    """Scenario: three lines on stdin, key<TAB>value and a value alone, with a header, to a
    topic named by --topic (no app). We expect: one "topic partition@offset" line per record,
    and tail --format full shows each record's key, value and header."""
    result = _cli(
        "send",
        "--topic",
        topic,
        "--broker",
        broker.url,
        "-H",
        "trace=abc",
        stdin='k1\t"ann"\nk2\t{"n": 2}\n"no key"\n',
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{topic} ") for line in lines)
    assert "@" in lines[0] and lines[0].endswith("key=k1") and "key=" not in lines[2]
    records = [json.loads(line) for line in _tail(broker, topic, "--format", "full")]
    by_value = {json.dumps(r["value"]): r for r in records}
    assert by_value['"ann"']["key"] == "k1" and by_value['{"n": 2}']["key"] == "k2"
    assert by_value['"no key"']["key"] is None
    assert all(r["headers"] == {"trace": "abc"} for r in records)
    assert {r["topic"] for r in records} == {topic}


def test_send_with_another_key_separator_and_a_single_value(broker: Broker, topic: str) -> None:
    """Scenario: lines split by --key-separator ':', then one VALUE with --key. We expect:
    the keys and values as split; tail --format value prints the values alone."""
    result = _cli(
        "send", "--topic", topic, "--broker", broker.url, "--key-separator", ":",
        stdin="a:1\nb:2\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _cli("send", "--topic", topic, "--broker", broker.url, "--key", "c", "3").exit_code == 0
    assert sorted(_tail(broker, topic, "--format", "json")) == [
        '{"key": "a", "value": 1}',
        '{"key": "b", "value": 2}',
        '{"key": "c", "value": 3}',
    ]
    assert _tail(broker, topic, "--format", "value", "--key", "b") == ["2"]


def test_tail_starts_where_asked(broker: Broker, topic: str) -> None:
    """Scenario: five records on partition 0 of a 3-partition topic. We expect: --offset
    (from the start, and negative from the end), --partition, --since and --new-only
    select the records a Kafka user expects."""
    stdin = "".join(f"k\t{n}\n" for n in range(5))
    assert _cli(
        "send", "--topic", topic, "--broker", broker.url, "--partition", "0", stdin=stdin
    ).exit_code == 0  # fmt: skip
    values = lambda *flags: [int(v) for v in _tail(broker, topic, "--format", "value", *flags)]  # noqa: E731
    assert values() == [0, 1, 2, 3, 4]
    assert values("--offset", "3") == [3, 4]
    assert values("--offset", "-2", "--partition", "0") == [3, 4]
    assert values("--partition", "1") == []
    assert values("--since", "10m") == [0, 1, 2, 3, 4]
    assert values("--since", "2999-01-01T00:00:00Z") == []
    assert values("--new-only") == []
    assert values("--max", "2") == [0, 1]


def test_unknown_topic_fails_fast_naming_the_known_ones(broker: Broker, topic: str) -> None:
    """Scenario: tail and send to a topic that does not exist. We expect: exit code 1 and
    one line naming the known topics, without creating the topic."""
    for command in (
        ("tail", "--topic", f"{topic}-typo", "--broker", broker.url),
        ("send", "--topic", f"{topic}-typo", "--broker", broker.url, "1"),
    ):
        result = _cli(*command)
        assert result.exit_code == 1
        assert f"topic '{topic}-typo' does not exist; known topics:" in result.output
        assert topic in result.output and "Traceback" not in result.output
    assert "does not exist" in _cli(*command).output  # still not created


def test_no_broker_and_ports_in_use_are_one_line() -> None:
    """Scenario: a command pointed at a port where no broker listens; a worker and a
    broker told to use a port in use. We expect: one line each, naming the address and
    the remedy, exit code 1, no traceback."""
    nowhere = free_port()
    for command in (
        ("send", "--topic", "t", "--broker", f"kafka://127.0.0.1:{nowhere}", "1"),
        ("tail", "--topic", "t", "--broker", f"kafka://127.0.0.1:{nowhere}"),
        ("worker", "examples.greeter:app", "--broker", f"kafka://127.0.0.1:{nowhere}"),
    ):
        result = _cli(*command)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: no broker at 127.0.0.1:{nowhere} (start one with `agentstream broker`)\n"
        )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("broker", "--port", str(port))
        assert result.output == (
            f"Error: port {port} is in use (another broker?): pass another --port\n"
        )


def test_worker_port_clash_is_one_line(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Scenario: a worker whose web port is taken. We expect: "port N is in use (another
    worker?): pass another --web-port", exit code 1."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli(
            "worker", "examples.greeter:app", "--broker", broker.url,
            "--data-dir", str(tmp_path_factory.mktemp("clash")), "--web-port", str(port),
        )  # fmt: skip
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: port {port} is in use (another worker?): pass another --web-port\n"
    )


def test_version_short_help_and_log_level_after_the_command() -> None:
    """Scenario: --version, -h at the top and on a command, --log-level after a command.
    We expect: the version, the help texts, and the level accepted in both places."""
    assert _cli("--version").output == f"agentstream, version {__version__}\n"
    assert "Commands:" in _cli("-h").output
    assert "--key-separator" in _cli("send", "-h").output
    assert "--log-level" in _cli("tail", "-h").output
    result = _cli("events", "-h", "--log-level", "debug")
    assert result.exit_code == 0 and "--seq" in result.output


def test_demo_sends_the_apps_declared_samples(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario: `agentstream demo` of an app that declares AgentApp(samples=[...]), and
    of one that declares none. We expect: the first sends its own samples and prints their
    outputs; the second fails in one line saying how to declare samples."""
    folder = tmp_path_factory.mktemp("demo")
    (folder / "demo_apps.py").write_text(
        "from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action\n"
        "\n"
        "class Upper(Agent):\n"
        "    @action(InputEvent)\n"
        "    def run(event: InputEvent, ctx: RunnerContext) -> None:\n"
        "        ctx.send_event(OutputEvent(output=str(event.input).upper()))\n"
        "\n"
        "app = AgentApp('upper', agent=Upper(), input_topic='upper-in', output_topic='upper-out',\n"
        "               samples=[('x', 'first sample'), ('y', 'second sample')])\n"
        "bare = AgentApp('bare', agent=Upper(), input_topic='bare-in', output_topic='bare-out')\n"
    )
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    result = _cli("demo", "demo_apps:app")
    assert result.exit_code == 0, result.output
    assert "x -> FIRST SAMPLE" in result.output and "y -> SECOND SAMPLE" in result.output
    assert "2 outputs" in result.output and "ann" not in result.output
    bare = _cli("demo", "demo_apps:bare")
    assert bare.exit_code == 1
    assert bare.output.endswith(
        "Error: app 'bare' declares no samples to send: give it some, "
        "AgentApp(..., samples=[(key, value), ...])\n"
    )


def test_broker_command_stops_its_broker_on_sigterm() -> None:
    """Scenario: `agentstream broker` is stopped with SIGTERM (as a service manager or a
    shell's kill does). We expect: the command exits and the broker it ran is gone with
    it (its port is free again), not left running as an orphan."""
    import signal
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentstream", "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        said = ""
        while f"embedded broker on kafka://127.0.0.1:{port}" not in said:  # it listens
            line = proc.stdout.readline().decode()
            assert line, f"the broker command ended early: {said}"
            said += line
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) != 0:
                    break
            assert time.monotonic() < deadline, "the broker still listens after SIGTERM"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
