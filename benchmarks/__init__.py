"""Benchmarks of agentstream against a raw aiokafka pipe and a plain Faust agent.

- ``python -m benchmarks.kafka`` (``make bench``): every figure through the embedded broker,
  baselines interleaved with agentstream, a fresh broker per run; table, JSON and plot.
- ``python -m benchmarks.local`` (``make bench-local``): the workloads in-process.

Modules: :mod:`benchmarks.agents` (the workload agents, run by ``agentstream worker``),
:mod:`benchmarks.faust_app` and :mod:`benchmarks.raw_pipe` (the baselines, each run in its
own process), :mod:`benchmarks._common` (records, process probes, statistics),
:mod:`benchmarks._pipelines` (starting the processes under test), :mod:`benchmarks.report`
(table, JSON, plot). See ``docs/benchmarks.md``.
"""
