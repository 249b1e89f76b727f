"""The processes under test, each started in its own process on a given broker.

- ``raw``: :mod:`benchmarks.raw_pipe`;
- ``faust`` / ``faust-stock``: :mod:`benchmarks.faust_app` (``faust`` gets agentstream's
  fetch wait, ``faust-stock`` keeps Faust's hard-coded 1.5 s);
- ``agentstream``: ``agentstream worker benchmarks.agents:app`` with a workload.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agentstream.service.broker import free_port
from benchmarks._common import cpu_seconds, peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent
APP, INPUT, OUTPUT = "bench", "bench-in", "bench-out"
FETCH_WAIT_MS = 50
"""The consumer fetch wait of agentstream (its default) and of the ``faust`` baseline."""


@dataclass
class Pipeline:
    """A running process under test."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_s(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.pid)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _spawn(name: str, argv: list[str], env: dict[str, str], workdir: Path) -> Pipeline:
    log_path = workdir / f"{name}-{len(list(workdir.glob(name + '-*.log')))}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Pipeline(name, proc, log_path)


def start_raw(bootstrap: str, workdir: Path) -> Pipeline:
    return _spawn("raw", ["-m", "benchmarks.raw_pipe", bootstrap, INPUT, OUTPUT], {}, workdir)


def start_faust(
    bootstrap: str, workdir: Path, *, stock: bool = False, embedded: bool = True
) -> Pipeline:
    env = {
        "BENCH_FAUST_EMBEDDED": "1" if embedded else "0",
        "BENCH_BROKER": f"kafka://{bootstrap}",
        "BENCH_APP": APP,
        "BENCH_IN": INPUT,
        "BENCH_OUT": OUTPUT,
        "BENCH_DATA_DIR": str(workdir / "faust-data"),
        "BENCH_FAUST_FETCH_WAIT_MS": "" if stock else str(FETCH_WAIT_MS),
    }
    argv = ["-m", "benchmarks.faust_app", "worker", "--without-web", "-l", "warn"]
    return _spawn("faust-stock" if stock else "faust", argv, env, workdir)


def start_agentstream(
    bootstrap: str,
    workdir: Path,
    workload: str,
    *,
    tag_pid: bool = False,
    max_concurrency: int | None = None,
    env: dict[str, str] | None = None,
    embedded: bool = True,
    guarantee: str = "at_least_once",
) -> Pipeline:
    """``agentstream worker`` of ``workload``; ``embedded``: the broker is the embedded one
    (its workarounds, ``--embedded-broker``) or a real Kafka (``--real-broker``)."""
    env = {
        **(env or {}),
        "BENCH_WORKLOAD": workload,
        "BENCH_APP": APP,
        "BENCH_IN": INPUT,
        "BENCH_OUT": OUTPUT,
        "BENCH_TAG_PID": "1" if tag_pid else "",
    }
    argv = [
        "-m", "agentstream", "worker", "benchmarks.agents:app",
        "--broker", f"kafka://{bootstrap}",
        "--data-dir", str(workdir / "agentstream-data"),
        "--web-port", str(free_port()),
        "--fetch-wait-ms", str(FETCH_WAIT_MS),
        "--embedded-broker" if embedded else "--real-broker",
        "--processing-guarantee", guarantee,
    ]  # fmt: skip
    if max_concurrency is not None:
        argv += ["--max-concurrency", str(max_concurrency)]
    return _spawn(f"agentstream-{workload}", argv, env, workdir)
