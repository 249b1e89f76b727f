"""The unit tier runs twice: as written, then with every ``LocalRunner`` in "always replay".

Each test is parametrized ``[plain]`` and ``[always_replay]``. In the second run a runner
built without an explicit ``always_replay`` re-runs every action from its record right
after it ran and compares what it did (restate's test harness), so every runtime test also
exercises replay and exposes non-determinism. The switch is the process-wide default read
by ``LocalRunner`` (``agentstream.testing._replay_default``), which works on the compiled
build too.

A test that cannot run under always replay (it counts action executions, or tests the
replay check itself) is marked ``@pytest.mark.no_always_replay("reason")`` and runs plain
only; a failure under always replay is otherwise a defect to fix, not to mark.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentstream.testing._replay_default import always_replay_by_default

_MODES = ("plain", "always_replay")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("no_always_replay")
    if marker is not None and not (marker.args or marker.kwargs.get("reason")):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: no_always_replay needs a reason")
    modes = _MODES[:1] if marker is not None else _MODES
    metafunc.parametrize("replay_mode", modes, indirect=True)


@pytest.fixture(autouse=True)
def replay_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """``plain`` or ``always_replay``: the default of runners this test builds."""
    mode: str = request.param
    with always_replay_by_default(mode == "always_replay"):
        yield mode
