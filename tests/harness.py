"""End-to-end harness: worker processes, an output collector, bounded waits."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentstream.service.broker import free_port

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Wait for ``condition``; fail saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class WorkerProcess:
    """``agentstream worker`` in a real process (so it can be SIGKILLed)."""

    app_spec: str
    broker_url: str
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    embedded: bool | None = None
    """Pass ``--embedded-broker`` (True) or ``--real-broker`` (False); None lets the worker
    detect the broker, as a user's would."""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        flags = {True: ["--embedded-broker"], False: ["--real-broker"], None: []}[self.embedded]
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentstream",
                "worker",
                self.app_spec,
                "--broker",
                self.broker_url,
                "--data-dir",
                str(self.data_dir),
                "--web-port",
                str(self.web_port),
                *flags,
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def health(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=1) as r:
                return int(r.status)
        except OSError as exc:
            return int(getattr(exc, "code", 0) or 0)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` (0 if absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    async def ready(self, timeout: float = 30) -> WorkerProcess:
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log_tail()}")
            return self.health() == 200

        await wait_until(check, timeout, f"worker on port {self.web_port} to be ready")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Topic:
    """Reads a topic from the beginning, accumulating records."""

    def __init__(self, bootstrap: str, topic: str, isolation_level: str = "read_uncommitted"):
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
            isolation_level=isolation_level,
        )

    async def __aenter__(self) -> Topic:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self) -> list[Any]:
        batch = await self._consumer.getmany(timeout_ms=50)
        for messages in batch.values():
            self.records.extend(messages)
        return self.records

    async def wait_for_values(
        self, wanted: set[tuple[str, Any]], timeout: float, what: str = "outputs"
    ) -> list[Any]:
        """Wait until every (key, JSON value's "value" field) in ``wanted`` has arrived
        (duplicates do not count twice)."""

        async def complete() -> bool:
            seen = {(k, v["value"]) for k, v, _ in decoded(await self.poll())}
            return wanted <= seen

        await wait_until(complete, timeout, f"{len(wanted)} distinct {what}")
        return self.records

    async def wait_for(self, count: int, timeout: float, what: str = "records") -> list[Any]:
        async def enough() -> bool:
            return len(await self.poll()) >= count

        await wait_until(enough, timeout, f"{count} {what} (have {len(self.records)})")
        return self.records


async def produce(
    bootstrap: str, topic: str, records: list[tuple[str | None, Any]], raw: bool = False
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for i, (key, value) in enumerate(records):
            data = value if raw else json.dumps(value).encode()
            await producer.send(
                topic,
                value=data,
                key=key.encode() if key else None,
                timestamp_ms=1_700_000_000_000 + i,
            )
        await producer.flush()
    finally:
        await producer.stop()


def effects(directory: Path) -> Counter[str]:
    path = directory / "effects"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def decoded(records: list[Any]) -> list[tuple[str, Any, dict[str, str]]]:
    return [
        (r.key.decode(), json.loads(r.value), {k: v.decode() for k, v in r.headers})
        for r in records
    ]
