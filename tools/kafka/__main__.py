"""``python -m tools.kafka up|down|status|jars``: a real Kafka for a person (``make kafka-up``).

- ``up [--brokers N]`` starts a cluster in the background (data in a temporary directory)
  and prints ``bootstrap=HOST:PORT[,...]`` as its last line; when one is already running it
  prints that one's.
- ``down`` stops it (SIGTERM, SIGKILL after 15 s) and removes its data.
- ``status`` prints the running cluster's bootstrap, or exits 1.
- ``jars`` fetches the pinned Kafka's jars if ``java`` and ``mvn`` exist, else says once that
  the real-Kafka test tier will be skipped (exit 0: ``make test`` goes on without it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from tools.kafka.launcher import (
    CACHE,
    KafkaCluster,
    KafkaLaunchError,
    ensure_jars,
    kafka_version,
    missing_tools,
)

STATE = CACHE / "running.json"
"""What ``up`` started: bootstrap, pids, data directory."""


def _is_kafka(pid: int) -> bool:
    """Whether ``pid`` is alive and still one of our Kafka JVMs (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"kafka.Kafka" in cmdline and b"agentstream-kafka-" in cmdline


def _running() -> dict[str, object] | None:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    pids = [int(pid) for pid in state.get("pids", [])]
    return state if pids and all(_is_kafka(pid) for pid in pids) else None


def up(brokers: int) -> int:
    state = _running()
    if state is not None:
        print(f"Kafka {state['version']} is already running (make kafka-down stops it)")
    else:
        down(quiet=True)  # the leftovers of a cluster that died
        cluster = KafkaCluster(brokers).start()
        cluster.detach()
        state = {
            "version": kafka_version(),
            "bootstrap": cluster.bootstrap,
            "pids": [node.proc.pid for node in cluster.nodes if node.proc is not None],
            "directory": str(cluster.directory),
        }
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(state))
        print(f"Kafka {state['version']} started; logs in {state['directory']}/node-*/broker.log")
    print(f"bootstrap={state['bootstrap']}")
    return 0


def down(quiet: bool = False) -> int:
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        if not quiet:
            print("no Kafka started by make kafka-up is running")
        return 0
    pids = [int(pid) for pid in state.get("pids", []) if _is_kafka(int(pid))]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while any(_is_kafka(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _is_kafka(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    directory = str(state.get("directory", ""))
    if Path(directory).name.startswith("agentstream-kafka-"):
        shutil.rmtree(directory, ignore_errors=True)
    STATE.unlink(missing_ok=True)
    if not quiet:
        print(f"Kafka at {state.get('bootstrap')} stopped")
    return 0


def status() -> int:
    state = _running()
    if state is None:
        print("no Kafka started by make kafka-up is running")
        return 1
    print(f"bootstrap={state['bootstrap']}")
    return 0


def jars() -> int:
    missing = missing_tools()
    if missing:
        print(
            f"real-Kafka tier: {' and '.join(missing)} not found, so its tests will be "
            "skipped (install a JDK 17+ and Maven to run them)"
        )
        return 0
    print(f"Apache Kafka {kafka_version()} jars in {ensure_jars()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start Kafka in the background")
    start.add_argument("--brokers", type=int, default=1, help="1, or 3 for a cluster")
    commands.add_parser("down", help="stop what up started")
    commands.add_parser("status", help="print the running Kafka's bootstrap")
    commands.add_parser("jars", help="fetch the pinned Kafka's jars")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return up(args.brokers)
        if args.command == "down":
            return down()
        if args.command == "status":
            return status()
        return jars()
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
