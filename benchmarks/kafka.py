"""Benchmarks through a broker (``make bench [BROKER=kafka]``); see ``docs/benchmarks.md``.

    python -m benchmarks.kafka [--quick] [--only one,faust,...] [--reps N]
                               [--load before|after-ready] [--profile]
                               [--broker embedded|kafka] [--guarantee G[,G]]

Every run gets a fresh broker (the embedded one, or with ``--broker kafka`` a one-node
Apache Kafka from ``tools/kafka``) and a fresh data directory. ``--guarantee`` picks the
processing guarantees of the agentstream workloads; on a real Kafka both run by default,
the exactly-once ones reported "not available" while the worker refuses that guarantee.

Throughput runs pre-load the input topic, then start the process under test and time the
outputs as a separate consumer sees them: rate = outputs after the first poll / (t_last -
t_first_output); CPU is the process's user + system time over the same interval, per
record. The baselines run interleaved with agentstream within each repetition (raw, faust,
one, one-eos, three...). A failed run is reported and not repeated; no run starts after
:data:`BUDGET_S` (:data:`KAFKA_BUDGET_S` on a real Kafka).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.service.broker import EmbeddedBroker, ensure_topics
from benchmarks import ceiling, report, state
from benchmarks._common import (
    KEYS,
    PARTITIONS,
    cpu_seconds,
    encode,
    key_of,
    percentile,
    value_of,
)
from benchmarks._pipelines import (
    INPUT,
    OUTPUT,
    Pipeline,
    start_agentstream,
    start_faust,
    start_raw,
)

RESULTS = Path(__file__).resolve().parent / "results"
FULL = dict(
    records=20_000,
    reps=3,
    waves=3,
    latency_s=10.0,
    restart_records=5_000,
    rss_keys=100_000,
    local_records=50_000,
)
QUICK = dict(
    records=5_000,
    reps=1,
    waves=3,
    latency_s=4.0,
    restart_records=3_000,
    rss_keys=10_000,
    local_records=20_000,
)
BUDGET_S = 13 * 60
"""No new run starts after this long, so that the full suite ends within 15 minutes."""
KAFKA_BUDGET_S = 24 * 60
"""The same on a real Kafka (``--broker kafka``): every run starts a JVM (about 9 s)."""
BROKER = "embedded"
"""The broker of every run (``--broker``): ``embedded`` (Tansu) or ``kafka`` (Apache Kafka)."""
KAFKA_NAMES = ("raw", "faust", "one", "three", "llm", "latency", "restart")
"""What ``--broker kafka`` runs without ``--only``."""
GUARANTEES = ("at_least_once", "exactly_once")
EOS = "exactly_once"
_broker_pid: int | None = None
"""The process of the real Kafka of the run under way (its CPU is measured too)."""
LLM_KEYS = 5_000
"""Keys of ``llm5k``, all in flight at once (issue 15)."""
NAMES = (
    "raw", "faust", "one", "three", "llm", "llm5k", "latency", "restart", "rss", "local",
    "memory", "chat", "steps",
)  # fmt: skip
LATENCY_RATE = 500
START_S = 30.0
"""A run fails when its first output takes longer than this (process start included)."""
STALL_S = 15.0
"""... or when no new output arrives for this long after the first."""
LOAD = "before"
"""How inputs reach a throughput run (``--load``): see :func:`start_loaded`."""
PAUSE_MAX_RECORDS = 20_000
WARM_KEY = b"warm"


class Outputs:
    """Reads the output topic from the beginning and notes when each record arrived.

    Outputs of warm-up records (key ``warm``) only set :attr:`warm`.
    """

    def __init__(self, bootstrap: str, parse: bool = False, committed: bool = False):
        self.parse = parse
        self.times: list[float] = []
        self.values: list[Any] = []
        self.first_poll = 0
        self.warm = False
        self.load_s: float | None = None
        """How long writing the inputs took while the pipeline ran (``after-ready``)."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # exactly-once outputs count when their transaction commits, as consumers see them
            isolation_level="read_committed" if committed else "read_uncommitted",
        )

    @property
    def count(self) -> int:
        return len(self.times)

    async def poll(self) -> int:
        batch = await self._consumer.getmany(timeout_ms=50)
        now = time.time()
        new = [m for messages in batch.values() for m in messages if m.key != WARM_KEY]
        self.warm = self.warm or any(len(messages) for messages in batch.values())
        self.times += [now] * len(new)
        if self.parse:
            self.values += [json.loads(m.value) for m in new]
        if new and not self.first_poll:
            self.first_poll = len(new)
        return len(new)

    async def wait_for(
        self,
        count: int,
        what: str,
        pipeline: Pipeline | None,
        on_first: Callable[[], None] | None = None,
        stall_s: float = STALL_S,
    ) -> None:
        """Poll until ``count`` outputs; fail when ``pipeline`` dies or outputs stall."""
        progress = time.monotonic()
        while self.count < count:
            if await self.poll():
                progress = time.monotonic()
                if on_first is not None and self.count == self.first_poll:
                    on_first()
            if pipeline is not None and not pipeline.alive():
                raise RuntimeError(f"{pipeline.name} exited:\n{pipeline.log_tail()}")
            limit = stall_s if self.count else max(stall_s, START_S)
            if time.monotonic() - progress > limit:
                raise TimeoutError(
                    f"no new output for {limit:.0f} s waiting for {what}: have "
                    f"{self.count}/{count} (inputs lost?)"
                )

    async def __aenter__(self) -> Outputs:
        await self._consumer.start()
        self._consumer.assign([TopicPartition(OUTPUT, p) for p in range(PARTITIONS)])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()


@contextlib.asynccontextmanager
async def fresh_broker() -> AsyncIterator[tuple[str, Path]]:
    """A fresh broker (:data:`BROKER`) with the input and output topics, and a scratch
    directory."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if BROKER == "kafka":
            from tools.kafka import KafkaCluster

            global _broker_pid
            cluster = KafkaCluster(data_dir=Path(tmp) / "kafka")
            await asyncio.to_thread(cluster.start)
            _broker_pid = cluster.nodes[0].proc.pid if cluster.nodes[0].proc else None
            try:
                await ensure_topics(cluster.bootstrap, {INPUT: PARTITIONS, OUTPUT: PARTITIONS})
                yield cluster.bootstrap, Path(tmp)
            finally:
                _broker_pid = None
                await asyncio.to_thread(cluster.stop, 2.0)
            return
        with EmbeddedBroker() as broker:
            await ensure_topics(broker.bootstrap, {INPUT: PARTITIONS, OUTPUT: PARTITIONS})
            yield broker.bootstrap, Path(tmp)


@contextlib.asynccontextmanager
async def producer(bootstrap: str, linger_ms: int = 5) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=linger_ms
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def preload(bootstrap: str, n: int, keys: int = KEYS) -> None:
    async with producer(bootstrap) as client:
        for i in range(n):
            await client.send(INPUT, key=key_of(i, keys).encode(), value=encode(value_of(i, keys)))
        await client.flush()


async def warm_up(bootstrap: str, out: Outputs, pipeline: Pipeline) -> None:
    """Send a warm-up record every 100 ms until one comes out: the pipeline is running."""
    deadline = time.monotonic() + START_S
    async with producer(bootstrap, linger_ms=0) as client:
        while not out.warm:
            await client.send(INPUT, key=WARM_KEY, value=encode(value_of(-1, warm=1)))
            await out.poll()
            await asyncio.sleep(0.1)
            if time.monotonic() > deadline or not pipeline.alive():
                raise RuntimeError(f"{pipeline.name} never answered:\n{pipeline.log_tail()}")


def start(kind: str, bootstrap: str, workdir: Path, **kw: Any) -> Pipeline:
    """Start ``kind`` on the broker :data:`BROKER`; ``kw`` goes to agentstream workers
    (``guarantee``, ``tag_pid``, ``max_concurrency``, ``env``)."""
    embedded = BROKER == "embedded"
    if kind == "raw":
        return start_raw(bootstrap, workdir)
    if kind in ("faust", "faust-stock"):
        return start_faust(bootstrap, workdir, stock=kind == "faust-stock", embedded=embedded)
    return start_agentstream(bootstrap, workdir, kind, embedded=embedded, **kw)


async def start_loaded(
    kind: str,
    bootstrap: str,
    workdir: Path,
    out: Outputs,
    records: int,
    keys: int = KEYS,
    **kw: Any,
) -> Pipeline:
    """Start ``kind`` with ``records`` inputs waiting for it.

    ``LOAD == "before"``: written before the process starts. ``"after-ready"``: written
    right after a warm-up record made the round trip, with the process paused (SIGSTOP)
    while the inputs are written if that takes well under the 2 s session timeout (up to
    :data:`PAUSE_MAX_RECORDS`), so that it finds a backlog, as with ``before``.
    """
    if LOAD == "before":
        await preload(bootstrap, records, keys)
        return start(kind, bootstrap, workdir, **kw)
    pipeline = start(kind, bootstrap, workdir, **kw)
    try:
        await warm_up(bootstrap, out, pipeline)
        pause = records <= PAUSE_MAX_RECORDS
        if pause:
            pipeline.pause()
        started = time.monotonic()
        try:
            await preload(bootstrap, records, keys)
        finally:
            if pause:
                pipeline.resume()
        out.load_s = time.monotonic() - started
    except BaseException:
        pipeline.stop()
        raise
    return pipeline


# -- measurements ------------------------------------------------------------------------


async def throughput(kind: str, records: int, keys: int = KEYS, **kw: Any) -> dict[str, Any]:
    """Load ``records``, run ``kind``, time the outputs (see the module docstring)."""
    committed = kw.get("guarantee") == EOS
    async with (
        fresh_broker() as (bootstrap, workdir),
        Outputs(bootstrap, committed=committed) as out,
    ):
        pipeline = await start_loaded(kind, bootstrap, workdir, out, records, keys, **kw)
        try:
            first: dict[str, float] = {}
            broker = _broker_pid

            def on_first() -> None:
                first.update(cpu=pipeline.cpu_s())
                if broker is not None:
                    first.update(broker=cpu_seconds(broker))

            await out.wait_for(records, f"{records} outputs of {kind}", pipeline, on_first=on_first)
            cpu = pipeline.cpu_s() - first["cpu"]
            broker_cpu = cpu_seconds(broker) - first["broker"] if broker is not None else None
            rss = pipeline.peak_rss_mib()
        finally:
            pipeline.stop()
    t_first, t_last = out.times[0], out.times[-1]
    counted = records - out.first_poll
    broker_figures = (  # the real Kafka's CPU over the same interval
        {} if broker_cpu is None else {"broker_cpu_us_per_record": broker_cpu / counted * 1e6}
    )
    return {
        **broker_figures,
        "records": records,
        "keys": keys,
        "seconds": t_last - t_first,
        "rate": counted / (t_last - t_first),
        "cpu_us_per_record": cpu / counted * 1e6,
        "cpu_utilisation": cpu / (t_last - t_first),
        "peak_rss_mib": rss,
        "load_s": out.load_s,
    }


async def llm(
    waves: int, guarantee: str = "at_least_once", keys: int = KEYS, call_s: float = 1.0
) -> dict[str, Any]:
    """``waves`` inputs per key, ``keys`` keys (all in flight: the worker's concurrency cap
    is raised to them); each input awaits a simulated 1 s call.

    Between the first output (end of the first wave) and the last, ``waves - 1`` waves
    complete: inputs/s = (records - keys) / (t_last - t_first); ideal ``keys``/s, and the
    CPU-bound ceiling of :mod:`benchmarks.ceiling` for the CPU the run spent per input.
    ``call_s`` 0: calls return at once, and the rate is what the CPU allows.
    """
    records = waves * keys
    committed = guarantee == EOS
    extra: dict[str, Any] = {} if keys == KEYS else {"max_concurrency": keys}
    extra["env"] = {"BENCH_CALL_S": str(call_s)}
    async with (
        fresh_broker() as (bootstrap, workdir),
        Outputs(bootstrap, committed=committed) as out,
    ):
        pipeline = await start_loaded(
            "llm", bootstrap, workdir, out, records, keys, guarantee=guarantee, **extra
        )
        first: list[float] = []
        try:
            await out.wait_for(
                records,
                f"{records} llm outputs",
                pipeline,
                on_first=lambda: first.append(pipeline.cpu_s()),
            )
            cpu_s = pipeline.cpu_s() - first[0]
            rss = pipeline.peak_rss_mib()
        finally:
            pipeline.stop()
    seconds = out.times[-1] - out.times[0]
    rate, cpu_us = (records - keys) / seconds, cpu_s / (records - keys) * 1e6
    top = ceiling.ceiling(cpu_us, keys, waves, call_s) if call_s else rate
    return {
        "records": records,
        "seconds": seconds,
        "rate": rate,
        "cpu_us_per_record": cpu_us,
        "cpu_utilisation": cpu_s / seconds,
        "ceiling": top,
        "vs_ceiling": rate / top,
        "peak_rss_mib": rss,
    }


async def latency(kind: str, seconds: float, rate: int = LATENCY_RATE, **kw: Any) -> dict[str, Any]:
    """End-to-end latency at a fixed produce rate, from the produce time in each record."""
    total = int(seconds * rate)
    committed = kw.get("guarantee") == EOS
    async with (
        fresh_broker() as (bootstrap, workdir),
        Outputs(bootstrap, parse=True, committed=committed) as out,
    ):
        pipeline = start(kind, bootstrap, workdir, **kw)
        try:
            await warm_up(bootstrap, out, pipeline)
            async with producer(bootstrap, linger_ms=0) as client:

                async def produce() -> None:
                    t0 = time.monotonic()
                    for i in range(total):
                        delay = t0 + i / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        value = encode(value_of(i))  # stamped with the produce time
                        await client.send(INPUT, key=key_of(i).encode(), value=value)

                sending = asyncio.create_task(produce())
                await out.wait_for(total, f"{total} {kind} outputs", pipeline)
                await sending
        finally:
            pipeline.stop()
    lat = [(t - v["ts"]) * 1000 for t, v in zip(out.times, out.values, strict=True)]
    return {
        "records": len(lat),
        "rate": rate,
        "p50_ms": percentile(lat, 0.50),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": max(lat),
    }


async def restart(records: int, guarantee: str = "at_least_once") -> dict[str, Any]:
    """SIGKILL an agentstream worker mid-stream, restart it, time to its first output.

    Afterwards, waits until every input has an output (or outputs stall) and counts the
    duplicates and the inputs that never got an output.
    """
    kw: dict[str, Any] = {"tag_pid": True, "guarantee": guarantee}
    async with (
        fresh_broker() as (bootstrap, workdir),
        Outputs(bootstrap, parse=True, committed=guarantee == EOS) as out,
    ):
        first = await start_loaded("one", bootstrap, workdir, out, records, **kw)
        second = None
        try:
            await out.wait_for(records // 5, "outputs before the kill", first)
            first.kill()
            t_kill = time.time()
            second = start("one", bootstrap, workdir, **kw)
            seen = 0
            deadline = time.monotonic() + START_S
            while second.pid not in (v.get("pid") for v in out.values[seen:]):
                seen = out.count
                await out.poll()
                if time.monotonic() > deadline or not second.alive():
                    raise RuntimeError(f"no output after the restart:\n{second.log_tail()}")
            index = next(i for i, v in enumerate(out.values) if v.get("pid") == second.pid)
            t_new = out.times[index]
            progress = time.monotonic()
            while len({v["i"] for v in out.values}) < records:
                if await out.poll():
                    progress = time.monotonic()
                elif time.monotonic() - progress > STALL_S or not second.alive():
                    break  # the missing inputs are reported
        finally:
            first.kill()
            if second is not None:
                second.stop()
    distinct = len({v["i"] for v in out.values})
    return {
        "records": records,
        "seconds": t_new - t_kill,
        "outputs": out.count,
        "duplicates": out.count - distinct,
        "missing": records - distinct,
    }


# -- profiling -----------------------------------------------------------------------------


async def profile(workload: str, records: int) -> Path:
    """Sample an agentstream worker with py-spy from its first output to its last."""
    raw = RESULTS / f"profile-{workload}.txt"
    spy_bin = Path(sys.executable).with_name("py-spy")  # the venv's, even if not on PATH
    command = [str(spy_bin) if spy_bin.exists() else "py-spy", "record", "--rate", "500"]
    command += ["--function", "--nonblocking", "--full-filenames", "--format", "raw"]
    command += ["-o", str(raw), "--pid"]
    spy: list[subprocess.Popen[bytes]] = []
    async with fresh_broker() as (bootstrap, workdir), Outputs(bootstrap) as out:
        pipeline = await start_loaded(workload, bootstrap, workdir, out, records)

        def attach() -> None:
            spy.append(subprocess.Popen([*command, str(pipeline.pid)], stdout=subprocess.DEVNULL))

        try:
            await out.wait_for(records, "profiled outputs", pipeline, on_first=attach)
        finally:
            for p in spy:
                p.send_signal(signal.SIGINT)
                p.wait(30)
            pipeline.stop()
    return raw


# -- the suite ----------------------------------------------------------------------------


def refusal(error: str) -> str | None:
    """The worker's refusal of exactly_once (its one-line ``Error:``) in a failed run's
    error, or None when the run failed otherwise."""
    match = re.search(r"Error: (.*exactly_once.*)", error)
    return match.group(1).strip() if match else None


async def suite(
    names: set[str], cfg: dict[str, Any], runs: dict[str, list[dict[str, Any]]], stop_at: float
) -> dict[str, list[dict[str, Any]]]:
    """Run the selected figures into ``runs`` (``{figure: [run, ...]}``, failures as
    ``{"error": ...}``); no run starts after ``stop_at`` (monotonic)."""

    refused: list[str] = []  # why the worker refuses exactly_once, once a run said so

    async def measure(figure: str, coro: Any, eos: bool = False) -> None:
        if any("error" in r for r in runs.get(figure, [])):
            coro.close()  # failed before: not repeated, to keep the suite short
            return
        if eos and refused:
            coro.close()
            runs[figure] = [{"error": f"not available: {refused[0]}"}]
            print(f"  {figure}: not available", flush=True)
            return
        started = time.monotonic()
        try:
            if started > stop_at:
                raise TimeoutError(f"skipped: the suite's {budget_s:.0f} s budget is spent")
            result = await coro
        except Exception as exc:  # a failed run is reported, the suite goes on
            coro.close()
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            if eos and (reason := refusal(result["error"])):
                refused.append(reason)
                result = {"error": f"not available: {reason}"}
        result["wall_s"] = round(time.monotonic() - started, 2)
        runs.setdefault(figure, []).append(result)
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
        print(f"  {figure}: {shown}", flush=True)

    n = cfg["records"]
    guarantees = cfg.get("guarantees", ["at_least_once"])
    budget_s = stop_at - time.monotonic()

    async def each_guarantee(figure: str, make: Callable[[str], Any]) -> None:
        """``figure`` under each guarantee, interleaved (exactly-once as ``figure-eos``)."""
        for guarantee in guarantees:
            eos = guarantee == EOS
            await measure(f"{figure}-eos" if eos else figure, make(guarantee), eos=eos)

    for rep in range(cfg["reps"]):
        print(f"repetition {rep + 1}/{cfg['reps']}", flush=True)
        if "raw" in names:
            await measure("raw", throughput("raw", n))
        if "faust" in names:
            await measure("faust", throughput("faust", n))
        if "one" in names:
            await each_guarantee("one", lambda g: throughput("one", n, guarantee=g))
        if "three" in names:
            await each_guarantee("three", lambda g: throughput("three", n, guarantee=g))
        if "llm" in names:
            await each_guarantee("llm", lambda g: llm(cfg["waves"], g))
        if "llm5k" in names:
            await each_guarantee("llm5k", lambda g: llm(cfg["waves"], g, keys=LLM_KEYS))
            await measure("llm5k-cpu", llm(cfg["waves"], keys=LLM_KEYS, call_s=0.0))
        if "latency" in names:
            await measure("latency-faust", latency("faust", cfg["latency_s"]))
            await each_guarantee(
                "latency-one", lambda g: latency("one", cfg["latency_s"], guarantee=g)
            )
            await measure("latency-faust-stock", latency("faust-stock", cfg["latency_s"]))
        if "restart" in names:
            await each_guarantee("restart", lambda g: restart(cfg["restart_records"], g))
        if "memory" in names:  # the state-cost workloads: benchmarks/state.py
            for size in state.MEMORY_SIZES:
                await measure(f"memory-{size // 1000}k", state.memory(size, n))
        if "chat" in names:
            await measure("chat", state.chat())
            await measure("chat-dicts", state.chat("chat-dicts"))
        if "steps" in names:
            await measure("steps", state.steps())
    if "rss" in names:
        # Capped at 1,000 keys in flight: uncapped (the default), the whole backlog of
        # 100,000 keys is taken at once and the in-flight tasks, not the state, dominate.
        keys = cfg["rss_keys"]
        await measure("rss", throughput("count", keys, keys=keys, max_concurrency=KEYS))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kafka", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 repetition, small runs")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument(
        "--load",
        choices=("before", "after-ready"),
        default="before",
        help="write the inputs before the process starts (default), or after a warm-up",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy profiles of one and three instead"
    )
    parser.add_argument(
        "--broker",
        choices=("embedded", "kafka"),
        default="embedded",
        help="the embedded broker (default) or Apache Kafka from tools/kafka (make kafka-jars)",
    )
    parser.add_argument(
        "--guarantee",
        help=f"processing guarantees of the agentstream workloads, comma separated, of "
        f"{','.join(GUARANTEES)} (default: at_least_once; with --broker kafka both)",
    )
    args = parser.parse_args(argv)
    global LOAD, BROKER
    LOAD = args.load
    BROKER = args.broker
    kafka = BROKER == "kafka"
    guarantees = (args.guarantee or ",".join(GUARANTEES[: 2 if kafka else 1])).split(",")
    if unknown_guarantees := set(guarantees) - set(GUARANTEES):
        parser.error(f"unknown guarantees {sorted(unknown_guarantees)}")
    logging.basicConfig(level=logging.ERROR)
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    names = set(args.only.split(",")) if args.only else set(KAFKA_NAMES if kafka else NAMES)
    if unknown := names - set(NAMES):
        parser.error(f"unknown names {sorted(unknown)}; known: {', '.join(NAMES)}")
    RESULTS.mkdir(exist_ok=True)
    if args.profile:
        for workload in ("one", "three"):
            path = asyncio.run(profile(workload, cfg["records"]))
            summary = report.profile_summary(path, workload)
            path.with_suffix(".summary.txt").write_text(summary + "\n")
            print(summary)
        return 0
    cfg["load"] = LOAD
    cfg["broker"] = BROKER
    cfg["guarantees"] = guarantees
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    if "local" in names:
        from benchmarks.local import run_local

        print("in-process (LocalRunner)", flush=True)
        runs.update(run_local(cfg["reps"], cfg["local_records"]))
    if kafka:
        from tools.kafka import ensure_jars, kafka_version

        ensure_jars()  # fetched once (make kafka-jars), before the clock of any run
        cfg["kafka_version"] = kafka_version()
    asyncio.run(suite(names, cfg, runs, started + (KAFKA_BUDGET_S if kafka else BUDGET_S)))
    results = report.build(runs, cfg, quick=args.quick, wall_s=time.monotonic() - started)
    stem = ("real-kafka" if kafka else "kafka") + ("-quick" if args.quick else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    print(report.table(results))
    with contextlib.suppress(ImportError):
        report.plot(results, RESULTS / f"{stem}.png")
        if any(figure.startswith(("memory-", "chat")) for figure in runs):
            state.plot(runs, RESULTS / f"{stem}-memory.png")
    print(f"results: {RESULTS / (stem + '.json')} (wall {results['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
