"""The state-cost workloads through the embedded broker (issue 15): what an input costs as
the key's memory grows, and what an input's action state writes.

    python -m benchmarks.kafka --quick --only memory,chat,steps

- ``memory``: the ``memory`` agent (a counter bump) over 50 keys, each also holding
  ``BENCH_MEMORY_BYTES`` of memory no input touches, at several sizes; the figure is the
  rate at 100 KB against the rate with none.
- ``chat``: 50 keys, 200 inputs each, every input appending 1 KB to the key's history
  (200 KB at the end); the figure is inputs/s in the last fifth of the outputs against
  the first fifth. ``chat-dicts``: the same with each message a dict (role, content).
- ``steps``: one input running 50 chained actions; the figure is the bytes the changelog
  holds afterwards (records, then the tombstones of pruning) against 50 x one action's
  record.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks._common import PARTITIONS
from benchmarks._pipelines import APP

__all__ = ["MEMORY_SIZES", "chat", "memory", "steps"]

MEMORY_KEYS = 50
MEMORY_SIZES = (0, 10_000, 100_000, 1_000_000)
CHAT_KEYS, CHAT_PER_KEY = 50, 200
STEPS = 50
CHANGELOG = f"{APP}-state-changelog"
SETTLE_S = 3.0
"""``steps`` reads the changelog once it has not grown for this long (pruning included)."""


async def memory(size: int, records: int) -> dict[str, Any]:
    """``records`` inputs of the ``memory`` agent with ``size`` bytes of untouched memory."""
    from benchmarks.kafka import throughput

    env = {"BENCH_MEMORY_BYTES": str(size)}
    result = await throughput("memory", records, keys=MEMORY_KEYS, env=env)
    return {**result, "memory_bytes": size}


def _fifths(times: list[float], first_poll: int) -> list[float]:
    """Outputs/s in each fifth of the outputs (by arrival; the first poll's outputs, which
    have no start time, are not counted)."""
    fifth = len(times) // 5
    rates = [(fifth - first_poll) / (times[fifth - 1] - times[0])]
    for k in range(1, 5):
        start, end = k * fifth - 1, (k + 1) * fifth - 1
        rates.append(fifth / (times[end] - times[start]))
    return rates


async def chat(workload: str = "chat") -> dict[str, Any]:
    """The ``chat`` agent (or ``chat-dicts``): rate of the first and last fifth of the
    outputs."""
    from benchmarks.kafka import Outputs, fresh_broker, start_loaded

    records = CHAT_KEYS * CHAT_PER_KEY
    async with fresh_broker() as (bootstrap, workdir), Outputs(bootstrap) as out:
        pipeline = await start_loaded(workload, bootstrap, workdir, out, records, CHAT_KEYS)
        try:
            first: dict[str, float] = {}
            await out.wait_for(
                records,
                f"{records} chat outputs",
                pipeline,
                on_first=lambda: first.update(cpu=pipeline.cpu_s()),
            )
            cpu = pipeline.cpu_s() - first["cpu"]
        finally:
            pipeline.stop()
    fifths = _fifths(out.times, out.first_poll)
    counted = records - out.first_poll
    seconds = out.times[-1] - out.times[0]
    return {
        "records": records,
        "keys": CHAT_KEYS,
        "history_kb": CHAT_PER_KEY,
        "seconds": seconds,
        "rate": counted / seconds,
        "rate_by_fifth": fifths,  # history 0-40 KB, 40-80 KB, ... 160-200 KB
        "rate_first_fifth": fifths[0],
        "rate_last_fifth": fifths[-1],
        "last_vs_first": fifths[-1] / fifths[0],
        "cpu_us_per_record": cpu / counted * 1e6,
    }


async def _changelog(bootstrap: str) -> list[tuple[bytes, int, int]]:
    """Every record of the changelog: (key, its bytes, the value's bytes)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    tps = [TopicPartition(CHANGELOG, p) for p in range(PARTITIONS)]
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[tuple[bytes, int, int]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                for m in messages:
                    key = m.key or b""
                    records.append((key, len(key), len(m.value or b"")))
        return records
    finally:
        await consumer.stop()


async def steps() -> dict[str, Any]:
    """One input of the ``steps`` agent; the changelog's bytes once it settled."""
    from benchmarks.kafka import Outputs, fresh_broker, start_loaded

    async with fresh_broker() as (bootstrap, workdir), Outputs(bootstrap) as out:
        pipeline = await start_loaded("steps", bootstrap, workdir, out, 1, 1)
        try:
            await out.wait_for(1, "the output of the 50 steps", pipeline)
            count, still = -1, time.monotonic()
            while time.monotonic() - still < SETTLE_S:
                await asyncio.sleep(0.5)
                now = len(await _changelog(bootstrap))
                if now != count:
                    count, still = now, time.monotonic()
            records = await _changelog(bootstrap)
        finally:
            pipeline.stop()
    # One action's record: the median of the records of action runs (the input's marker
    # and the tombstones of pruning have no value).
    runs = sorted(k + v for key, k, v in records if key.startswith(b"r") and v)
    record = runs[len(runs) // 2] if runs else 0
    total = sum(k + v for _, k, v in records)
    by_kind: dict[str, int] = {}
    for key, k, v in records:
        kind = key[:1].decode(errors="replace")
        by_kind[kind] = by_kind.get(kind, 0) + k + v
    return {
        "records": len(records),
        "bytes": total,
        "action_record_bytes": record,
        "bytes_vs_50_records": total / (STEPS * record) if record else None,
        "bytes_by_prefix": by_kind,
    }


def plot(
    runs: dict[str, list[dict[str, Any]]],
    path: Any,
    before: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Inputs/s against the key's memory: ``memory`` (untouched) and ``chat`` (the history
    each input rewrites), medians of the runs; ``before``: another build's runs, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
    for label, shown, style in (("", runs, "-"), (" (before)", before, "--")):
        if shown is None:
            continue
        sizes, rates = _memory_curve(shown)
        if sizes:
            ax.plot(sizes, rates, "o" + style, color="#4878a8", label="memory" + label)
        history, by_fifth = _chat_curve(shown)
        if history:
            ax.plot(history, by_fifth, "s" + style, color="#c8702a", label="chat" + label)
    ax.set_xscale("log")
    ax.set_xlabel("short-term memory per key, KB (log; none drawn at 0.1)", fontsize=8)
    ax.set_ylabel("inputs/s", fontsize=8)
    ax.set_title(
        "memory: a counter bump beside untouched memory; chat: 1 KB appended to the history",
        fontsize=8,
    )
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _memory_curve(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[float], list[float]]:
    sizes, rates = [], []
    for size in MEMORY_SIZES:
        done = [r["rate"] for r in runs.get(f"memory-{size // 1000}k", []) if "rate" in r]
        if done:
            sizes.append(max(size, 100) / 1000)
            rates.append(statistics.median(done))
    return sizes, rates


def _chat_curve(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[float], list[float]]:
    chats = [r["rate_by_fifth"] for r in runs.get("chat", []) if "rate_by_fifth" in r]
    if not chats:
        return [], []
    history = [(k + 0.5) * CHAT_PER_KEY / 5 for k in range(5)]
    return history, [statistics.median(f[k] for f in chats) for k in range(5)]


def main() -> None:
    """``python -m benchmarks.state AFTER.json [BEFORE.json] OUT.png``: the plot from the
    results of ``benchmarks.kafka`` runs (``BEFORE``: another build's, dashed)."""
    import json
    import sys
    from pathlib import Path

    *inputs, out = sys.argv[1:]
    loaded = [json.loads(Path(name).read_text())["runs"] for name in inputs]
    plot(loaded[0], out, loaded[1] if len(loaded) > 1 else None)


if __name__ == "__main__":
    main()
