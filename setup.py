"""Build: the runtime's hot path is compiled with mypyc when a wheel is built.

``pip install .`` and the Docker image compile the modules in ``COMPILED`` (a C compiler
is needed; without one, or with ``AGENTSTREAM_PURE_PYTHON=1``, the same modules are
installed as plain Python, which behaves the same, only slower). Editable installs
(``pip install -e .``, what ``make setup`` does) are never compiled, so an edited source
file is always the code that runs.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

COMPILED = [
    "agentstream/api/ids.py",
    "agentstream/observability/histogram.py",
    "agentstream/runtime/action_state.py",
    "agentstream/runtime/codec.py",
    "agentstream/runtime/context.py",
    "agentstream/runtime/counts.py",
    "agentstream/runtime/keyloop.py",
    "agentstream/runtime/keyrun.py",
    "agentstream/runtime/limit.py",
    "agentstream/runtime/memory.py",
    "agentstream/runtime/memory_values.py",
    "agentstream/runtime/operator.py",
    "agentstream/runtime/eventtime.py",
    "agentstream/runtime/records.py",
    "agentstream/runtime/sending.py",
    "agentstream/runtime/step.py",
    "agentstream/serde.py",
    "agentstream/testing/_runner.py",
]


def _extensions() -> list:
    if os.environ.get("AGENTSTREAM_PURE_PYTHON") == "1" or "editable_wheel" in sys.argv:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    extensions = mypycify(COMPILED, opt_level="3")
    for extension in extensions:
        extension.optional = True  # no compiler: install the plain Python modules
    return extensions


setup(ext_modules=_extensions())
