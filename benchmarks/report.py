"""Figures from runs: the table (with ratios and targets), the JSON, the plot, profiles."""

from __future__ import annotations

import collections
import datetime
import operator
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks._common import summary

# (label, figure, field, unit, baseline figure or constant, comparison, target ratio)
ROWS: list[tuple[str, str, str, str, str | float | None, str, float | None]] = [
    ("raw aiokafka pipe (ceiling)", "raw", "rate", "rec/s", "faust", "", None),
    ("plain Faust forwarder", "faust", "rate", "rec/s", None, "", None),
    ("`one` through Kafka", "one", "rate", "rec/s", "faust", ">=", 2.5),
    ("`three` through Kafka", "three", "rate", "rec/s", "faust", ">=", 1.0),
    ("`llm` through Kafka", "llm", "rate", "inputs/s", 1000.0, ">=", 0.8),
    ("`llm`, 5,000 keys in flight", "llm5k", "rate", "inputs/s", 5000.0, ">=", 0.8),
    (
        "`llm`, 5,000 keys: CPU-bound ceiling (benchmarks/ceiling.py)",
        "llm5k",
        "ceiling",
        "inputs/s",
        5000.0,
        "",
        None,
    ),
    ("`llm`, 5,000 keys, vs that ceiling", "llm5k", "vs_ceiling", "x", 1.0, ">=", 0.8),
    ("`llm`, 5,000 keys, calls of 0 s (all CPU)", "llm5k-cpu", "rate", "inputs/s", None, "", None),
    ("`one` in-process", "one-local", "rate", "rec/s", 100_000.0, ">=", 1.0),
    ("`three` in-process", "three-local", "rate", "rec/s", 25_000.0, ">=", 1.0),
    ("`one` in-process, all action state kept", "one-local-keep", "rate", "rec/s", None, "", None),
    (
        "`three` in-process, all action state kept",
        "three-local-keep",
        "rate",
        "rec/s",
        None,
        "",
        None,
    ),
    ("latency p50, Faust @500/s", "latency-faust", "p50_ms", "ms", None, "", None),
    ("latency p99, Faust @500/s", "latency-faust", "p99_ms", "ms", None, "", None),
    ("latency p99, stock Faust @500/s", "latency-faust-stock", "p99_ms", "ms", None, "", None),
    ("latency p50, `one` @500/s", "latency-one", "p50_ms", "ms", "latency-faust", "", None),
    ("latency p99, `one` @500/s", "latency-one", "p99_ms", "ms", "latency-faust", "<=", 1.2),
    ("restart after SIGKILL to 1st output", "restart", "seconds", "s", 15.0, "<=", 1.0),
    ("duplicates after the restart", "restart", "duplicates", "records", None, "", None),
    ("inputs lost in the restart", "restart", "missing", "records", None, "", None),
    # exactly-once (a real Kafka, --guarantee exactly_once): against at-least-once, same run
    ("`one` exactly-once", "one-eos", "rate", "rec/s", "one", ">=", 0.7),
    ("`three` exactly-once", "three-eos", "rate", "rec/s", "three", "", None),
    ("`llm` exactly-once", "llm-eos", "rate", "inputs/s", 1000.0, "", None),
    ("latency p50, `one` exactly-once @500/s", "latency-one-eos", "p50_ms", "ms", None, "", None),
    (
        "latency p99, `one` exactly-once @500/s (vs the 500 ms commit interval)",
        "latency-one-eos",
        "p99_ms",
        "ms",
        500.0,
        "<=",
        3.0,
    ),
    ("restart after SIGKILL, exactly-once", "restart-eos", "seconds", "s", 15.0, "<=", 1.0),
    (
        "duplicates after the restart, exactly-once",
        "restart-eos",
        "duplicates",
        "records",
        None,
        "",
        None,
    ),
    (
        "inputs lost in the restart, exactly-once",
        "restart-eos",
        "missing",
        "records",
        None,
        "",
        None,
    ),
    ("CPU per record, `one` exactly-once", "one-eos", "cpu_us_per_record", "µs", "one", "", None),
    # the real Kafka's own CPU over the same interval (--broker kafka; absent on the embedded)
    ("broker CPU per record, raw pipe", "raw", "broker_cpu_us_per_record", "µs", None, "", None),
    ("broker CPU per record, Faust", "faust", "broker_cpu_us_per_record", "µs", None, "", None),
    ("broker CPU per record, `one`", "one", "broker_cpu_us_per_record", "µs", "faust", "", None),
    (
        "broker CPU per record, `one` exactly-once",
        "one-eos",
        "broker_cpu_us_per_record",
        "µs",
        "one",
        "",
        None,
    ),
    (
        "peak RSS, {keys:,} keys of memory (1k in flight)",
        "rss",
        "peak_rss_mib",
        "MiB",
        None,
        "",
        None,
    ),
    ("peak RSS, `one` (1k keys)", "one", "peak_rss_mib", "MiB", None, "", None),
    ("CPU per record, raw pipe", "raw", "cpu_us_per_record", "µs", "faust", "", None),
    ("CPU per record, Faust", "faust", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per record, `one`", "one", "cpu_us_per_record", "µs", "faust", "", None),
    ("CPU per record, `three`", "three", "cpu_us_per_record", "µs", "faust", "", None),
    ("CPU per input, `llm`", "llm", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per input, `llm`, 5,000 keys", "llm5k", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per input, `llm`, calls of 0 s", "llm5k-cpu", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per input, `rss` (`count`)", "rss", "cpu_us_per_record", "µs", None, "", None),
    ("`memory`, no other memory", "memory-0k", "rate", "inputs/s", None, "", None),
    ("`memory`, 10 KB untouched", "memory-10k", "rate", "inputs/s", "memory-0k", "", None),
    ("`memory`, 100 KB untouched", "memory-100k", "rate", "inputs/s", "memory-0k", ">=", 0.8),
    ("`memory`, 1 MB untouched", "memory-1000k", "rate", "inputs/s", "memory-0k", "", None),
    ("`chat`, first fifth (0-40 KB)", "chat", "rate_first_fifth", "inputs/s", None, "", None),
    ("`chat`, last fifth (160-200 KB)", "chat", "rate_last_fifth", "inputs/s", None, "", None),
    ("`chat`, last fifth / first fifth", "chat", "last_vs_first", "x", 1.0, ">=", 0.5),
    ("`chat-dicts`, last fifth / first fifth", "chat-dicts", "last_vs_first", "x", 1.0, "", None),
    ("`steps`, changelog bytes of 1 input", "steps", "bytes", "B", None, "", None),
    ("`steps`, one action's record", "steps", "action_record_bytes", "B", None, "", None),
    ("`steps`, bytes / (50 x record)", "steps", "bytes_vs_50_records", "x", 1.0, "<=", 2.0),
    ("CPU per record, `memory` 0 KB", "memory-0k", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per record, `memory` 100 KB", "memory-100k", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per record, `chat`", "chat", "cpu_us_per_record", "µs", None, "", None),
    ("CPU per record, `chat-dicts`", "chat-dicts", "cpu_us_per_record", "µs", None, "", None),
    ("CPU utilisation, Faust", "faust", "cpu_utilisation", "cores", None, "", None),
    ("CPU utilisation, `one`", "one", "cpu_utilisation", "cores", None, "", None),
    ("CPU utilisation, `three`", "three", "cpu_utilisation", "cores", None, "", None),
]


KAFKA_TARGETS = {("one", "rate"): 1.5}
"""Targets that differ on a real Kafka (issue 12): `one` >= 1.5 x Faust on the same broker."""


def _git_commit() -> str:
    """The commit, with ``+dirty`` when agentstream/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "agentstream"], capture_output=True
        ).stdout.strip()
    except OSError:
        return "?"
    return head.stdout.decode().strip() + ("+dirty" if dirty else "")


def build(
    runs: dict[str, list[dict[str, Any]]], cfg: dict[str, Any], *, quick: bool, wall_s: float
) -> dict[str, Any]:
    """The results document: settings, every run, and one summary per table row."""
    rows = []
    for label, figure, field, unit, baseline, comparison, target in ROWS:
        if figure not in runs:
            continue
        if cfg.get("broker") == "kafka":
            target = KAFKA_TARGETS.get((figure, field), target)
        values = [r[field] for r in runs[figure] if field in r]
        errors = [r["error"] for r in runs[figure] if "error" in r]
        if not values and not errors:
            continue  # a field this broker does not give (broker CPU on the embedded one)
        stats = summary(values)
        if isinstance(baseline, float):
            base = baseline
        elif baseline is not None:
            base = summary([r[field] for r in runs.get(baseline, []) if field in r])["median"]
        else:
            base = None
        ratio = stats["median"] / base if stats["median"] is not None and base else None
        ok = None
        if comparison and ratio is not None and target is not None:
            ok = (operator.ge if comparison == ">=" else operator.le)(ratio, target)
        rows.append(
            {
                "label": label.format(keys=cfg.get("rss_keys", 0)),
                "figure": figure,
                "field": field,
                "unit": unit,
                **stats,
                "values": values,
                "errors": errors,
                "baseline": baseline,
                "ratio": ratio,
                "target": f"{comparison} {target:g} x {_vs(baseline)}" if comparison else None,
                "ok": ok,
            }
        )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": f"{platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}",
        "quick": quick,
        "config": cfg,
        "wall_s": wall_s,
        "rows": rows,
        "runs": runs,
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _vs(baseline: str | float | None) -> str:
    return "" if baseline is None else baseline if isinstance(baseline, str) else _num(baseline)


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(results: dict[str, Any]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| figure | median | min-max | ratio | target | ok |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in results["rows"]:
        if row["median"] is None:
            error = " ".join("; ".join(row["errors"]).split()).replace("|", "/")
            median, span = "failed", error[:100]
            if row["errors"] and all(e.startswith("not available") for e in row["errors"]):
                median, span = "not available", error.removeprefix("not available: ")[:100]
        else:
            median = f"{_num(row['median'])} {row['unit']}"
            span = f"{_num(row['min'])}-{_num(row['max'])}"
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f} x {_vs(row['baseline'])}"
        ok = {True: "yes", False: "**no**", None: ""}[row["ok"]]
        lines.append(
            f"| {row['label']} | {median} | {span} | {ratio} | {row['target'] or ''} | {ok} |"
        )
    return "\n".join(lines)


BASELINE, AGENTSTREAM = "#999999", "#4878a8"
THROUGHPUT_BARS = [
    ("raw", "rate", "raw"),
    ("faust", "rate", "Faust"),
    ("one", "rate", "one"),
    ("three", "rate", "three"),
    ("llm", "rate", "llm"),
    ("one-local", "rate", "one\nlocal"),
    ("three-local", "rate", "three\nlocal"),
]
LATENCY_BARS = [
    ("latency-faust", "p50_ms", "Faust\np50"),
    ("latency-one", "p50_ms", "one\np50"),
    ("latency-faust", "p99_ms", "Faust\np99"),
    ("latency-one", "p99_ms", "one\np99"),
]


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput (log scale) and latency: medians with min-max whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {(r["figure"], r["field"]): r for r in results["rows"] if r["median"] is not None}
    fig, axes = plt.subplots(1, 2, figsize=(8, 3), dpi=80, width_ratios=[2, 1])
    panels = (
        (axes[0], THROUGHPUT_BARS, "throughput, records/s (log)"),
        (axes[1], LATENCY_BARS, "latency at 500 records/s, ms"),
    )
    for ax, bars, title in panels:
        shown = [(label, rows[f, k]) for f, k, label in bars if (f, k) in rows]
        heights = [r["median"] for _, r in shown]
        whiskers = [
            [r["median"] - r["min"] for _, r in shown],
            [r["max"] - r["median"] for _, r in shown],
        ]
        colours = [
            BASELINE if label.startswith(("raw", "Faust")) else AGENTSTREAM for label, _ in shown
        ]
        ax.bar([label for label, _ in shown], heights, yerr=whiskers, capsize=3, color=colours)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


PLUMBING = (
    "<frozen",
    "click/",
    "agentstream/__main__.py",
    "agentstream/service/cli.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
)
"""Frames on every stack (interpreter start, CLI, event loop): left out of inclusive time."""


def profile_summary(raw: Path, workload: str, top: int = 15) -> str:
    """Top functions by own and inclusive samples, and own samples by module, from
    py-spy's raw (collapsed-stack) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        modules[frames[-1].partition("(")[2].rpartition(":")[0]] += n
        for frame in set(frames):
            if not frame.partition("(")[2].startswith(PLUMBING):
                inclusive[frame] += n

    def lines(counter: collections.Counter[str], k: int) -> list[str]:
        return [f"  {n / total:6.1%}  {name}" for name, n in counter.most_common(k)]

    return "\n".join(
        [
            f"profile of `{workload}`: {total} samples ({raw})",
            "",
            "own time:",
            *lines(own, top),
            "",
            "own time by module:",
            *lines(modules, top),
            "",
            "inclusive time (without interpreter, CLI and event-loop frames):",
            *lines(inclusive, top),
        ]
    )


def _short(frame: str) -> str:
    """``fn (path/site-packages/pkg/mod.py:12)`` -> ``fn (pkg/mod.py:12)``."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where}" if where else name
