"""The workloads in-process through :class:`LocalRunner` (``make bench-local``).

    python -m benchmarks.local [--records 50000] [--reps 3]

No Kafka and no RocksDB: the operator, the agent, memory and action state in memory.
Prints records/s (median of the repetitions, each with a fresh runner).

Two modes per workload:

- ``one-local`` / ``three-local``: ``LocalRunner(agent, auto_prune=True)``. Every action's
  state is recorded and dropped when its input finishes. Flink Agents' local runner,
  the peer these figures are compared with, keeps no action state at all.
- ``one-local-keep`` / ``three-local-keep``: the default ``LocalRunner(agent)``, which keeps
  the action state of every input until ``prune()`` (so that a new runner over the same
  store replays). All of it stays on the Python heap, where the cycle collector scans it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from agentstream.testing import LocalRunner
from benchmarks._common import KEYS, key_of, value_of
from benchmarks.agents import One, Three

RECORDS = 50_000


def measure(agent_class: type, records: int, *, keep: bool = False) -> dict[str, Any]:
    inputs = [(key_of(i), value_of(i)) for i in range(records)]
    runner = LocalRunner(agent_class(), auto_prune=not keep)
    started = time.perf_counter()
    outputs = runner.run(inputs)
    seconds = time.perf_counter() - started
    assert len(outputs) == records, f"{len(outputs)} outputs for {records} inputs"
    return {"records": records, "keys": KEYS, "seconds": seconds, "rate": records / seconds}


def run_local(reps: int = 3, records: int = RECORDS) -> dict[str, list[dict[str, Any]]]:
    """``{"one-local": [run, ...], "three-local": [...], ...}``, interleaved."""
    plan = [
        (f"{name}-local{'-keep' if keep else ''}", agent_class, keep)
        for keep in (False, True)
        for name, agent_class in (("one", One), ("three", Three))
    ]
    runs: dict[str, list[dict[str, Any]]] = {figure: [] for figure, _, _ in plan}
    for _ in range(reps):
        for figure, agent_class, keep in plan:
            runs[figure].append(measure(agent_class, records, keep=keep))
            print(f"  {figure}: {runs[figure][-1]['rate']:,.0f} records/s", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.local", description=__doc__)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    runs = run_local(args.reps, args.records)
    for figure, results in runs.items():
        rates = [r["rate"] for r in results]
        print(
            f"{figure:17} {statistics.median(rates):>10,.0f} records/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}; {args.records:,} records, "
            f"{KEYS:,} keys, median of {args.reps})"
        )


if __name__ == "__main__":
    main()
