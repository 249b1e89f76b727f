"""The workloads in-process through :class:`LocalRunner` (``make bench-local``).

    python -m benchmarks.local [--records 50000] [--reps 3]

No Kafka and no RocksDB: the operator, the agent, memory and action state in memory.
Prints records/s (median of the repetitions, each with a fresh runner).
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


def measure(agent_class: type, records: int) -> dict[str, Any]:
    inputs = [(key_of(i), value_of(i)) for i in range(records)]
    runner = LocalRunner(agent_class())
    started = time.perf_counter()
    outputs = runner.run(inputs)
    seconds = time.perf_counter() - started
    assert len(outputs) == records, f"{len(outputs)} outputs for {records} inputs"
    return {"records": records, "keys": KEYS, "seconds": seconds, "rate": records / seconds}


def run_local(reps: int = 3, records: int = RECORDS) -> dict[str, list[dict[str, Any]]]:
    """``{"one-local": [run, ...], "three-local": [...]}``, interleaved one, three, one..."""
    runs: dict[str, list[dict[str, Any]]] = {"one-local": [], "three-local": []}
    for _ in range(reps):
        for figure, agent_class in (("one-local", One), ("three-local", Three)):
            runs[figure].append(measure(agent_class, records))
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
            f"{figure:12} {statistics.median(rates):>10,.0f} records/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f}; {args.records:,} records, "
            f"{KEYS:,} keys, median of {args.reps})"
        )


if __name__ == "__main__":
    main()
