"""Apache Kafka from its Maven jars, for the real-Kafka test tier and ``make kafka-up``.

Not part of agentstream (the product stays pure Python). The broker's jars are resolved
once by Maven from ``tools/kafka/pom.xml`` into ``.cache/kafka/<version>/jars`` (git-ignored);
:class:`KafkaCluster` then formats storage and starts one node, or three, in KRaft combined
mode (each node broker and controller) on free ports with its data in a temporary
directory::

    with KafkaCluster() as kafka:            # or KafkaCluster(brokers=3)
        ...  # kafka.bootstrap == "127.0.0.1:PORT"

A 3-node cluster creates topics with replication factor 3 and ``min.insync.replicas=2`` by
default. For chaos tests a node can be paused (SIGSTOP/SIGCONT), killed and restarted.

Sizes suit a 2-core machine: a small serial-GC JVM, two network and I/O threads per node,
few internal-topic partitions, no initial rebalance delay.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "KafkaCluster",
    "KafkaLaunchError",
    "KafkaNode",
    "ensure_jars",
    "kafka_version",
    "missing_tools",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.properties"
CACHE = Path(os.environ.get("AGENTSTREAM_KAFKA_CACHE", ROOT / ".cache" / "kafka"))

DEFAULT_JVM_OPTIONS = (
    "-Xms64m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # C1 only: half the startup CPU; throughput is not the point
    "-Djava.awt.headless=true",
)
"""JVM options of every node (the machines have 2 cores)."""


class KafkaLaunchError(RuntimeError):
    """Kafka could not be fetched, formatted or started; the message says what and why."""


def kafka_version() -> str:
    """The pinned Kafka version (``kafka.version`` in ``tools/kafka/pom.xml``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(POM).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise KafkaLaunchError(f"{POM} has no <kafka.version> property")
    return (node.text or "").strip()


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def missing_tools() -> list[str]:
    """Which of ``java`` and ``mvn`` are not found (the real tier needs both)."""
    found = {"java": _java(), "mvn": shutil.which("mvn")}
    return [name for name, path in found.items() if path is None]


def ensure_jars(cache: Path = CACHE) -> Path:
    """The folder of the pinned Kafka's jars, resolved by Maven on first use.

    Safe to call from several processes at once (a file lock); a resolution that failed half
    way leaves nothing that looks complete. A changed pom re-resolves.

    Raises:
        KafkaLaunchError: ``mvn`` is missing or failed (its output is in the message).
    """
    version = kafka_version()
    home = cache / version
    jars = home / "jars"
    stamp = home / "pom.sha256"
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()

    def current() -> bool:
        return jars.is_dir() and stamp.exists() and stamp.read_text() == digest

    if current():
        return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLaunchError("Maven (mvn) is not on PATH: it fetches Kafka's jars")
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current():
            return jars
        partial = home / f"jars.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        command = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"]
        command += [f"-DoutputDirectory={partial}", "-DincludeScope=runtime"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            output = (result.stdout + result.stderr)[-3000:]
            raise KafkaLaunchError(
                f"mvn could not resolve Kafka {version} from {POM} "
                f"(exit {result.returncode}):\n{output}"
            )
        shutil.rmtree(jars, ignore_errors=True)
        partial.rename(jars)
        stamp.write_text(digest)
    return jars


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with "-": the storage tool's argument parser would read it as an
    option ("argument --cluster-id/-t: expected one argument"), about one start in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(max(0, path.stat().st_size - max_bytes))
            return file.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
            proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kill_all(procs: list[subprocess.Popen[bytes]], directory: Path | None) -> None:
    """Last-resort cleanup at interpreter exit for a cluster that was never stopped."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            proc.wait()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


class KafkaNode:
    """One Kafka process (broker and controller) of a :class:`KafkaCluster`."""

    def __init__(self, node_id: int, host: str, directory: Path) -> None:
        self.node_id = node_id
        self.host = host
        self.port = _free_port(host)
        self.controller_port = _free_port(host)
        self.directory = directory
        self.config_path = directory / "server.properties"
        self.log_path = directory / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(self, command: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal reaches the test, not the JVM
            )
        self.paused = False
        return self.proc

    def pause(self) -> None:
        """Freeze the node (SIGSTOP): its peers and clients see it hang, not die."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Continue a paused node (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL the node; its data stays, so :meth:`KafkaCluster.restart` can bring it back."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.paused = False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout_s``."""
        if self.proc is not None:
            _stop_process(self.proc, timeout_s)
        self.paused = False

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise KafkaLaunchError(f"Kafka node {self.node_id} is not running")
        self.proc.send_signal(sig)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<KafkaNode {self.node_id} {self.bootstrap} {state}>"


class KafkaCluster:
    """Apache Kafka in KRaft combined mode: 1 node, or 3 with replication factor 3.

    Args:
        brokers: how many nodes (each a broker and a controller voter).
        host: the interface to listen on and advertise.
        data_dir: where configs, data and logs go; a temporary directory (removed on
            :meth:`stop`) when None.
        broker_configs: extra ``server.properties`` entries, winning over the defaults.
        jvm_options: the JVM's options (default :data:`DEFAULT_JVM_OPTIONS`).
        startup_timeout_s: how long :meth:`start` waits for every node to serve.
    """

    def __init__(
        self,
        brokers: int = 1,
        *,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        broker_configs: Mapping[str, str] | None = None,
        jvm_options: tuple[str, ...] = DEFAULT_JVM_OPTIONS,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if brokers < 1:
            raise ValueError(f"brokers must be >= 1, not {brokers}")
        self.size = brokers
        self.host = host
        self._data_dir = data_dir
        self._owns_dir = data_dir is None
        self._broker_configs = dict(broker_configs or {})
        self._jvm_options = jvm_options
        self._startup_timeout_s = startup_timeout_s
        self._command: list[str] = []
        self.nodes: list[KafkaNode] = []
        self._procs: list[subprocess.Popen[bytes]] = []  # every JVM ever started, for cleanup
        self._finalizer: weakref.finalize | None = None

    # -- addresses -------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port,...`` of every node, for ``bootstrap_servers``."""
        if not self.nodes:
            raise KafkaLaunchError("the Kafka cluster is not started")
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def url(self) -> str:
        """``kafka://host:port,...``, for agentstream's ``--broker``."""
        return f"kafka://{self.bootstrap}"

    @property
    def directory(self) -> Path:
        if self._data_dir is None:
            raise KafkaLaunchError("the Kafka cluster is not started")
        return self._data_dir

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.running for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no Kafka node {node_id} (nodes: {[n.node_id for n in self.nodes]})")

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> KafkaCluster:
        """Fetch the jars if needed, format storage, start every node, wait until they serve.

        Raises:
            KafkaLaunchError: java or mvn is missing, a node exited, or the cluster was not
                ready in time (the node's log tail is in the message).
        """
        if self.nodes:
            return self
        java = _java()
        if java is None:
            raise KafkaLaunchError("java is not on PATH (nor in JAVA_HOME): Kafka needs Java 17+")
        jars = ensure_jars()
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="agentstream-kafka-"))
        self._command = [java, *self._jvm_options, f"-Dlog4j2.configurationFile={LOG_CONFIG}"]
        self._command += ["-cp", f"{jars}/*"]
        self.nodes = [
            KafkaNode(i, self.host, self._data_dir / f"node-{i}") for i in range(1, self.size + 1)
        ]
        self._procs = []
        self._finalizer = weakref.finalize(
            self, _kill_all, self._procs, self._data_dir if self._owns_dir else None
        )
        try:
            self._format()
            for node in self.nodes:
                self._procs.append(node.launch([*self._command, "kafka.Kafka"]))
            self._wait_ready(self.nodes, self._startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every node and remove a temporary data dir.

        Nodes whose data is kept get SIGTERM (a controlled shutdown), SIGKILL after
        ``timeout_s``; nodes whose data is deleted anyway are SIGKILLed at once (a 3-node
        controlled shutdown takes seconds).
        """
        for node in self.nodes:  # all at once: a lone survivor waits for a lost quorum
            if node.running:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                    if self._owns_dir:
                        node.proc.kill()  # type: ignore[union-attr]
                    else:
                        node.proc.terminate()  # type: ignore[union-attr]
        for node in self.nodes:
            node.stop(timeout_s)
        self.nodes = []
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._owns_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def detach(self) -> None:
        """Leave the nodes running after this object and this process are gone
        (``make kafka-up``); stop them later by pid."""
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def pause(self, node_id: int | None = None) -> None:
        """SIGSTOP one node, or every node (the whole cluster hangs)."""
        for node in self._select(node_id):
            node.pause()

    def resume(self, node_id: int | None = None) -> None:
        """SIGCONT one node, or every node."""
        for node in self._select(node_id):
            node.resume()

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (its data stays for :meth:`restart`)."""
        self.node(node_id).kill()

    def restart(self, node_id: int, timeout_s: float = 60.0) -> None:
        """Start a killed or stopped node again on its ports and data; wait until it serves."""
        node = self.node(node_id)
        node.stop()
        self._procs.append(node.launch([*self._command, "kafka.Kafka"]))
        self._wait_ready([node], timeout_s)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<KafkaCluster {kafka_version()} {self.nodes or 'stopped'}>"

    # -- internals -------------------------------------------------------------------

    def _select(self, node_id: int | None) -> list[KafkaNode]:
        return list(self.nodes) if node_id is None else [self.node(node_id)]

    def _properties(self, node: KafkaNode) -> dict[str, str]:
        n = self.size
        replicas, min_isr = str(min(n, 3)), str(min(n, 2))
        voters = ",".join(f"{x.node_id}@{x.host}:{x.controller_port}" for x in self.nodes)
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "listeners": f"PLAINTEXT://{node.host}:{node.port},"
            f"CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{node.host}:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.quorum.voters": voters,
            "log.dirs": str(node.directory / "data"),
            # Replication: every topic on all nodes (up to 3), writes need 2 in sync.
            "default.replication.factor": replicas,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            # Keep records whatever their timestamps: the tests write fixed event times from
            # 2023, which Kafka's 7-day retention by record timestamp would delete at its
            # next check (every 5 minutes), mid-test.
            "log.retention.ms": "-1",
            # Fast: no delay before the first rebalance, few internal partitions to create.
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.num.partitions": "5",
            # A killed node is fenced (its partitions' leadership moves) within 3 s.
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            # Small: 2 cores shared with the tests.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **self._broker_configs,
        }

    def _format(self) -> None:
        cluster_id = _cluster_id()
        running: list[tuple[KafkaNode, subprocess.Popen[bytes]]] = []
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            text = "".join(f"{k}={v}\n" for k, v in self._properties(node).items())
            node.config_path.write_text(text)
            command = [*self._command, "kafka.tools.StorageTool", "format", "-t", cluster_id]
            command += ["-c", str(node.config_path)]
            with open(node.log_path, "ab") as log:
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            running.append((node, proc))
        for node, proc in running:
            try:
                code = proc.wait(self._startup_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                raise KafkaLaunchError(
                    f"formatting the storage of Kafka node {node.node_id} failed "
                    f"(exit {code}):\n{_tail(node.log_path)}"
                )

    def _wait_ready(self, nodes: list[KafkaNode], timeout_s: float) -> None:
        """Wait until each node listens and the cluster's metadata lists every node."""
        deadline = time.monotonic() + timeout_s
        for node in nodes:
            while not _listening(node.host, node.port):
                self._check_alive(node)
                if time.monotonic() > deadline:
                    raise KafkaLaunchError(
                        f"Kafka node {node.node_id} did not listen on {node.bootstrap} within "
                        f"{timeout_s:.0f} s:\n{_tail(node.log_path)}"
                    )
                time.sleep(0.05)
        wanted = {n.node_id for n in self.nodes}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-wait") as pool:
            # Its own thread and loop: start() is synchronous and may run inside a loop.
            pool.submit(
                asyncio.run, self._wait_for_metadata(nodes, wanted, deadline, timeout_s)
            ).result()

    async def _wait_for_metadata(
        self, nodes: list[KafkaNode], wanted: set[int], deadline: float, timeout_s: float
    ) -> None:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import KafkaError

        seen: set[int] = set()
        last_error: BaseException | None = None
        while True:
            for node in nodes:
                self._check_alive(node)
            try:
                admin = AIOKafkaAdminClient(
                    bootstrap_servers=",".join(n.bootstrap for n in nodes),
                    request_timeout_ms=2000,
                )
                try:
                    await asyncio.wait_for(admin.start(), 5)
                    cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
                finally:
                    await admin.close()
                seen = {int(b["node_id"]) for b in cluster["brokers"]}
                if wanted <= seen and int(cluster.get("controller_id", -1)) >= 0:
                    return
            except (KafkaError, OSError, TimeoutError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise KafkaLaunchError(
                    f"the Kafka cluster did not list brokers {sorted(wanted)} in its metadata "
                    f"within {timeout_s:.0f} s (saw {sorted(seen)}, last error {last_error!r})"
                )
            await asyncio.sleep(0.1)

    @staticmethod
    def _check_alive(node: KafkaNode) -> None:
        if node.proc is not None and node.proc.poll() is not None:
            raise KafkaLaunchError(
                f"Kafka node {node.node_id} exited with code {node.proc.returncode}:\n"
                f"{_tail(node.log_path)}"
            )
