"""The process-wide default of ``LocalRunner(always_replay=...)``.

A runner built without ``always_replay`` asks :func:`always_replay_default`, so a test
suite can run every test a second time with replay checked (our unit tier does, from
``tests/unit/conftest.py``) without touching the tests:

    with always_replay_by_default():
        LocalRunner(agent).run(inputs)  # each action re-run from its record and compared

This module is deliberately not compiled (``LocalRunner`` is): the switch is a module
attribute that compiled code reads at each construction, so flipping it works on the
wheel users install as well as on the sources.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["always_replay_by_default", "always_replay_default"]

_always_replay = False


def always_replay_default() -> bool:
    """What ``LocalRunner`` uses when it is given no ``always_replay``."""
    return _always_replay


@contextmanager
def always_replay_by_default(enabled: bool = True) -> Iterator[None]:
    """Within the block, runners built without ``always_replay`` get ``enabled``."""
    global _always_replay
    before = _always_replay
    _always_replay = enabled
    try:
        yield
    finally:
        _always_replay = before
