"""Shared pieces: the input records, process probes (/proc), statistics."""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

KEYS = 1000
PARTITIONS = 4
RECORD_BYTES = 200
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def key_of(i: int, keys: int = KEYS) -> str:
    return f"k{i % keys:06d}"


def value_of(i: int, keys: int = KEYS, **extra: Any) -> dict[str, Any]:
    """The ``i``-th input: a JSON object of about :data:`RECORD_BYTES` bytes."""
    value = {"i": i, "key": key_of(i, keys), "ts": time.time(), **extra, "text": ""}
    pad = RECORD_BYTES - len(json.dumps(value, separators=(",", ":")))
    value["text"] = "x" * max(pad, 0)
    return value


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def summary(values: list[float]) -> dict[str, float | None]:
    """Median, min and max (None when there is no value)."""
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
