"""The state-backend contract (tests/state_contract.py) over the in-memory backends.

``memory`` keeps records as objects (what ``LocalRunner`` uses); ``memory-bytes`` keeps
action state as the bytes the record codec writes, as a changelogged backend does. A
restart keeps both (they live as long as the process): ``reopen`` is a new operator over
the same backend. tests/integration/test_state_contract.py runs the same tests over the
changelog backend.
"""

from __future__ import annotations

import pytest

from agentstream.runtime.action_state import InMemoryActionStateStore
from agentstream.runtime.records import InMemoryKeyState
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


class MemoryBackend:
    def __init__(self, name: str, *, serialize: bool):
        self.name = name
        self.key_state = InMemoryKeyState()
        self.action_states = InMemoryActionStateStore(serialize=serialize)

    async def reopen(self) -> None:
        """The same objects: in-memory state lasts as long as the process."""


@pytest.fixture(params=["memory", "memory-bytes"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return MemoryBackend(request.param, serialize=request.param == "memory-bytes")
