"""Inspection of keys and dead letters on a running service (issue 16)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agentstream import Agent, AgentApp, InputEvent, OutputEvent, RunnerContext, action
from agentstream.service.broker import free_port
from agentstream.service.client import Connection, OutRecord, produce
from agentstream.service.web import WebServer
from agentstream.service.worker import Worker
from tests.brokers import Broker
from tests.harness import ROOT, Topic, wait_until


def remember(value: Any) -> str:
    return f"noted {value}"


class Holding(Agent):
    """Keeps inputs in memory; an input "hold" waits for the "gate" resource after one
    durable call (so the key is busy); "bad" raises."""

    @action(InputEvent)
    async def run(event: InputEvent, ctx: RunnerContext) -> None:
        if event.input == "bad":
            raise ValueError("bad input")
        seen = ctx.short_term_memory.get("seen") or []
        ctx.short_term_memory.set("seen", [*seen, event.input])
        if event.input == "hold":
            await ctx.durable_execute_async(remember, event.input)
            await ctx.get_resource("gate").wait()
        ctx.send_event(OutputEvent(output=event.input))


def _app(broker: Broker, tmp_path: Path, name: str, web_port: int, gate: asyncio.Event) -> AgentApp:
    return AgentApp(
        name,
        agent=Holding().add_resource("gate", gate),
        input_topic=f"{name}-in",
        output_topic=f"{name}-out",
        broker=broker.url,
        data_dir=tmp_path / f"{name}-{web_port}",
        embedded_broker=broker.embedded,
        fetch_wait_ms=20,
        commit_interval_s=0.1,
        partitions=2,
        web_port=web_port,
    )


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentstream", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _cli_until_ok(*args: str) -> subprocess.CompletedProcess[str]:
    """``agentstream ARGS``, run again while it fails (for 30 s: a rebalance passing)."""
    runs: list[subprocess.CompletedProcess[str]] = []

    async def ok() -> bool:
        runs.append(await asyncio.to_thread(_cli, *args))
        return runs[-1].returncode == 0

    try:
        await wait_until(ok, 30, f"agentstream {' '.join(args)} to succeed", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last stderr: {runs[-1].stderr}") from None
    return runs[-1]


async def test_keys_endpoint_and_inspect_find_the_key_and_its_owner(
    broker: Broker, tmp_path: Path
) -> None:
    """Scenario: two workers share a 2-partition app; key "busy" has an input held in an
    action (after a durable call) and two more pending. We expect: the owner's GET
    /keys/busy shows seq, the current input, the pending ones, the recorded durable call
    and the memory so far; the other worker answers 404 naming the owner's address; and
    `agentstream inspect --url <other>` follows it to the owner."""
    name = f"inspect-{free_port()}"
    gates = [asyncio.Event(), asyncio.Event()]
    ports = [free_port(), free_port()]
    workers = [
        Worker(_app(broker, tmp_path, name, p, g)) for p, g in zip(ports, gates, strict=True)
    ]
    servers = [WebServer(w, "127.0.0.1", p) for w, p in zip(workers, ports, strict=True)]
    for server in servers:
        await server.start()
    for worker in workers:
        await worker.start()
    try:

        async def balanced() -> bool:
            return all(w.ready.is_set() and len(w.assigned_partitions) == 1 for w in workers)

        await wait_until(balanced, 90, "both workers ready with one partition each")
        conn = Connection(broker.bootstrap, {}, broker.embedded)
        values = ["first", "hold", "next-1", "next-2"]
        await produce(
            conn, f"{name}-in", [OutRecord("busy", json.dumps(v).encode()) for v in values]
        )

        def owner_view() -> tuple[int, int, dict[str, Any]] | None:
            for index, port in enumerate(ports):
                status, body = _get(f"http://127.0.0.1:{port}/keys/busy")
                if status == 200 and len(body["pending"]) == 2 and body["action_runs"]:
                    return index, port, body
            return None

        # Both answers read together: a rebalance (a heartbeat late on a loaded machine)
        # can hide the key from both workers for a moment, and is waited out.
        seen: list[tuple[int, int, dict[str, Any], int, dict[str, Any]]] = []

        def owner_and_other() -> bool:
            view = owner_view()
            if view is None:
                return False
            index, port, body = view
            status, missing = _get(f"http://127.0.0.1:{ports[1 - index]}/keys/busy")
            seen[:] = [(index, port, body, status, missing)]
            return status == 404

        await wait_until(
            lambda: asyncio.to_thread(owner_and_other),
            60,
            "the owner to show key busy held with two pending inputs, the other to answer 404",
        )
        index, port, body, status, missing = seen[0]
        assert body["key"] == "busy" and body["seq"] == 2 and body["busy"] is True
        assert body["worker"] == f"http://127.0.0.1:{port}"
        assert body["current"]["value"] == "hold"
        assert [p["value"] for p in body["pending"]] == ["next-1", "next-2"]
        assert body["memory"] == {"seen": ["first", "hold"]}
        (run,) = body["action_runs"]
        assert run["action"] == "run" and run["completed"] is False
        assert run["durable_calls"][0]["status"] == "ok"
        assert "remember" in run["durable_calls"][0]["function"]

        other = ports[1 - index]
        assert status == 404 and missing["partition"] == body["partition"]
        if broker.embedded:  # it reports no group assignments: the owner is not known
            assert missing["owner"] is None and "another worker" in missing["error"]
        else:
            assert missing["owner"] == f"http://127.0.0.1:{port}", missing
            shown = await _cli_until_ok(
                "inspect", "x:app", "--key", "busy", "--url", f"http://127.0.0.1:{other}"
            )
            assert json.loads(shown.stdout)["pending"] == body["pending"]
            assert f"owned by the worker at http://127.0.0.1:{port}" in shown.stderr
        direct = await _cli_until_ok(
            "inspect", "x:app", "--key", "busy", "--url", f"http://127.0.0.1:{port}"
        )
        assert json.loads(direct.stdout)["memory"] == {"seen": ["first", "hold"]}

        gates[index].set()
        async with Topic(broker.bootstrap, f"{name}-out") as out:
            await out.wait_for(4, 60, "the four outputs once the gate opened")
        finished: list[tuple[int, dict[str, Any]]] = []

        def shown_done() -> bool:
            finished[:] = [_get(f"http://127.0.0.1:{port}/keys/busy")]
            return finished[0][0] == 200  # not while a rebalance passes

        await wait_until(lambda: asyncio.to_thread(shown_done), 30, "the owner to show key busy")
        done = finished[0][1]
        assert done["current"] is None and done["pending"] == []
        assert done["memory"] == {"seen": values}
        status, never = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/keys/nobody")
        assert status == 404 and "nobody" in never["error"]
    finally:
        for gate in gates:
            gate.set()
        for worker in workers:
            await worker.stop()
        for server in servers:
            await server.stop()


async def test_dead_letters_list_and_redrive(broker: Broker, tmp_path: Path) -> None:
    """Scenario: inputs of two keys fail and are dead-lettered; after "the fix", the
    dead letters of one key are redriven. We expect: `dead-letters list` shows each with
    its key, reason, error and source; `redrive --key` re-injects only that key's (its
    output appears), leaving the other's alone; `--since` in the future selects none."""
    name = f"dlq-{free_port()}"
    gate = asyncio.Event()
    gate.set()
    app = _app(broker, tmp_path, name, 0, gate)
    module = tmp_path / "dlq_app.py"
    module.write_text(
        f"from agentstream import AgentApp\n"
        f"from tests.integration.test_inspection import Holding\n"
        f"app = AgentApp({name!r}, agent=Holding(), input_topic={name + '-in'!r}, "
        f"output_topic={name + '-out'!r}, partitions=2)\n"
    )
    worker = Worker(app)
    await worker.start()
    try:
        await asyncio.wait_for(worker.ready.wait(), 60)
        conn = Connection(broker.bootstrap, {}, broker.embedded)
        await produce(
            conn,
            f"{name}-in",
            [OutRecord(k, json.dumps(v).encode()) for k, v in [("a", "bad"), ("b", "bad")]],
        )
        async with Topic(broker.bootstrap, f"{name}-dead-letters") as dead:
            await dead.wait_for(2, 60, "two dead letters")
    finally:
        await worker.stop()

    env_args = ("--broker", broker.url)
    spec = "dlq_app:app"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentstream", *args],
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = await asyncio.to_thread(cli, "dead-letters", spec, "list", *env_args)
    assert listed.returncode == 0, listed.stderr
    assert "key='a'" in listed.stdout and "key='b'" in listed.stdout
    assert "reason=action" in listed.stdout and "ValueError: bad input" in listed.stdout
    assert f"from {name}-in" in listed.stdout and "2 dead letter(s)" in listed.stderr
    as_json = await asyncio.to_thread(
        cli, "dead-letters", spec, "list", "--key", "a", "--format", "json", *env_args
    )
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["key"] == "a" and record["headers"]["agentstream-reason"] == "action"

    none = await asyncio.to_thread(
        cli, "dead-letters", spec, "redrive", "--since", "2999-01-01", *env_args
    )
    assert none.returncode == 0 and "0 dead letter(s)" in none.stderr
    redriven = await asyncio.to_thread(
        cli, "dead-letters", spec, "redrive", "--key", "a", *env_args
    )
    assert redriven.returncode == 0, redriven.stderr
    assert "1 dead letter(s) re-injected" in redriven.stderr
    async with Topic(broker.bootstrap, f"{name}-in") as inputs:
        records = await inputs.wait_for(3, 30, "the redriven input")
    again = [r for r in records if dict(r.headers).get("agentstream-redriven-from")]
    assert len(again) == 1 and again[0].key == b"a" and json.loads(again[0].value) == "bad"
