"""``agentstream rescale`` follows the app's layout (issue 13): what it prints as the
layout changes, when it is done, and how it gives up. The layout is scripted here; the
command against real workers is in tests/chaos/test_rescale.py."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agentstream import Agent, AgentApp, InputEvent, RunnerContext, action
from agentstream.errors import ConfigurationError
from agentstream.service import cli_rescale

pytestmark = pytest.mark.no_always_replay("no runner: the command's waiting only")


@dataclass(frozen=True)
class Layout:
    """The layout's contract (agentstream.service.layout.Layout)."""

    partitions: int
    previous: int
    moved: frozenset[int] = frozenset()

    @property
    def migrating(self) -> bool:
        return self.previous != self.partitions and len(self.moved) < self.partitions


class Idle(Agent):
    @action(InputEvent)
    def nothing(event: InputEvent, ctx: RunnerContext) -> None:
        pass


APP = AgentApp("shop", agent=Idle(), input_topic="shop-in", output_topic="shop-out")


@pytest.fixture
def layouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Layout | None]]:
    """What successive reads of the layout return (the last one again once used up)."""
    script: list[Layout | None] = []

    async def read_layout(bootstrap: str, client_kwargs: object, app_name: str) -> object:
        assert app_name == "shop"
        return script.pop(0) if len(script) > 1 else script[0]

    module = types.ModuleType("agentstream.service.layout")
    module.read_layout = read_layout  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agentstream.service.layout", module)
    monkeypatch.setattr(cli_rescale, "POLL_S", 0.001)
    yield script


async def _wait(partitions: int, unrecorded: int | None, timeout_s: float = 5) -> list[str]:
    lines: list[str] = []
    await cli_rescale.wait_for_layout(
        APP, "nowhere:9092", {}, partitions, unrecorded, timeout_s, lines.append
    )
    return lines


async def test_progress_is_printed_as_it_changes_then_done(layouts: list[Layout | None]) -> None:
    """Scenario: the workers have not noticed yet, then begin 4 -> 8, move partitions in
    steps (some reads showing no change), and finish.
    We expect: one line per change, in order, and the done line last."""
    layouts += [
        None,
        None,
        Layout(8, 4),
        Layout(8, 4, frozenset({0, 1, 2})),
        Layout(8, 4, frozenset({0, 1, 2})),
        Layout(8, 4, frozenset(range(8))),
    ]
    assert await _wait(8, None) == [
        "waiting for the workers of shop to notice 8 partitions",
        "migration 4 -> 8: 0/8 partitions moved",
        "migration 4 -> 8: 3/8 partitions moved",
        "done: shop's keys are spread over 8 partitions",
    ]


async def test_a_layout_behind_the_topic_is_waited_for(layouts: list[Layout | None]) -> None:
    """Scenario: the topic is at 12; the layout says 4 -> 8 done, then 8 -> 12 begins.
    We expect: a line saying the workers have yet to notice 12, then the progress to 12."""
    layouts += [
        Layout(8, 4, frozenset(range(8))),
        Layout(12, 8),
        Layout(12, 8, frozenset(range(12))),
    ]
    assert await _wait(12, 8) == [
        "waiting for the workers of shop to notice 12 partitions (its keys are laid out for 8)",
        "migration 8 -> 12: 0/12 partitions moved",
        "done: shop's keys are spread over 12 partitions",
    ]


async def test_a_migration_under_way_to_fewer_is_followed_first(
    layouts: list[Layout | None],
) -> None:
    """Scenario: the topic goes to 12 while the keys still move from 4 to 8.
    We expect: that migration's progress, saying 12 comes next, then the one to 12."""
    layouts += [Layout(8, 4, frozenset({1})), Layout(12, 8), Layout(12, 8, frozenset(range(12)))]
    assert await _wait(12, None) == [
        "migration 4 -> 8: 1/8 partitions moved (then to 12)",
        "migration 8 -> 12: 0/12 partitions moved",
        "done: shop's keys are spread over 12 partitions",
    ]


async def test_nothing_recorded_and_nothing_to_change_is_done_at_once(
    layouts: list[Layout | None],
) -> None:
    """Scenario: `rescale --partitions 4` on an app that never migrated (no layout; its
    changelog has 4 partitions). We expect: done at once."""
    layouts.append(None)
    assert await _wait(4, 4) == ["done: shop's keys are spread over 4 partitions"]


async def test_timeout_says_what_it_waited_for(layouts: list[Layout | None]) -> None:
    """Scenario: the migration stays at 3/8 (no worker running).
    We expect: RescaleTimeout naming the app, the target, the last progress and asking
    whether the workers are running."""
    layouts.append(Layout(8, 4, frozenset({0, 1, 2})))
    with pytest.raises(cli_rescale.RescaleTimeout) as caught:
        await _wait(8, None, timeout_s=0.05)
    text = str(caught.value)
    assert "shop" in text and "8 partitions" in text, text
    assert "migration 4 -> 8: 3/8 partitions moved" in text, text
    assert "are the workers running?" in text, text


async def test_a_layout_beyond_the_topic_is_refused(layouts: list[Layout | None]) -> None:
    """Scenario: the layout says 8 but the input topic has 4 (it was recreated).
    We expect: a ConfigurationError naming both counts."""
    layouts.append(Layout(8, 4, frozenset(range(8))))
    with pytest.raises(ConfigurationError, match=r"laid out for 8 partitions .* has 4"):
        await _wait(4, 4)
