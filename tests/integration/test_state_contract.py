"""The state-backend contract (tests/state_contract.py) over the changelog backend.

The operator's key records and action state (agentstream.service.tables) on a
:class:`ChangelogStore`: RocksDB per partition, every change produced to the changelog
topic on the module's broker. ``reopen`` is a new worker on a new machine: the store is
flushed and stopped, its local databases are deleted, and a new store recovers every
partition from the changelog alone (``changelog``); or the databases are kept and only the
changelog's tail is read (``changelog-local``).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentstream.service.tables import ChangelogActionStateStore, ChangelogKeyState
from agentstream.state import ChangelogStore
from tests.brokers import Broker
from tests.state_contract import (
    Backend,
    test_a_key_record_round_trips_with_every_field,
    test_a_new_record_replaces_the_old_one,
    test_action_state_round_trips_with_every_field,
    test_every_key_with_a_record_is_listed,
    test_memory_comes_back_as_the_last_finished_input_left_it,
    test_memory_is_kept_per_key_and_a_put_without_memory_keeps_it,
    test_pruning_drops_the_input_and_nothing_else,
    test_pruning_inputs_in_order_leaves_none_behind,
    test_pruning_what_is_not_there_is_harmless,
    test_runs_are_kept_apart_by_key_seq_action_and_event,
    test_unknown_keys_and_runs_have_no_record,
    test_writing_a_run_again_replaces_it,
)

__all__ = [
    "test_a_key_record_round_trips_with_every_field",
    "test_a_new_record_replaces_the_old_one",
    "test_action_state_round_trips_with_every_field",
    "test_every_key_with_a_record_is_listed",
    "test_memory_comes_back_as_the_last_finished_input_left_it",
    "test_memory_is_kept_per_key_and_a_put_without_memory_keeps_it",
    "test_pruning_drops_the_input_and_nothing_else",
    "test_pruning_inputs_in_order_leaves_none_behind",
    "test_pruning_what_is_not_there_is_harmless",
    "test_runs_are_kept_apart_by_key_seq_action_and_event",
    "test_unknown_keys_and_runs_have_no_record",
    "test_writing_a_run_again_replaces_it",
]

PARTITIONS = (0, 1)


class ChangelogBackend:
    def __init__(self, name: str, bootstrap: str, topic: str, data_dir: Path, *, wipe: bool):
        self.name = name
        self._bootstrap = bootstrap
        self._topic = topic
        self._data_dir = data_dir
        self._wipe = wipe
        self.store: ChangelogStore | None = None

    async def open(self) -> None:
        self.store = ChangelogStore(
            data_dir=self._data_dir,
            changelog_topic=self._topic,
            bootstrap=self._bootstrap,
            flush_interval_s=0.01,
        )
        await self.store.start()
        await self.store.assign(PARTITIONS)
        self.key_state = ChangelogKeyState(self.store)
        self.action_states = ChangelogActionStateStore(self.store)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.stop()  # flushes first
            self.store = None

    async def reopen(self) -> None:
        await self.close()
        if self._wipe:
            shutil.rmtree(self._data_dir)
        await self.open()
        assert self.store is not None
        recovered = [self.store.last_recovery(p) for p in PARTITIONS]
        assert all(stats is not None for stats in recovered)


@pytest.fixture(params=["changelog", "changelog-local"])
async def backend(
    request: pytest.FixtureRequest, broker: Broker, topic_factory, tmp_path: Path
) -> AsyncIterator[Backend]:
    topic = await topic_factory(len(PARTITIONS), "changelog")
    backend = ChangelogBackend(
        request.param,
        broker.bootstrap,
        topic,
        tmp_path / "state",
        wipe=request.param == "changelog",
    )
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
