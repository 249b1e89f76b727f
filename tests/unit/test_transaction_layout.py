"""Which store keys exactly-once holds for the partition's transaction: everything but
action state, which must stay durable at once (a completed call never runs again)."""

from __future__ import annotations

from agentstream.service import tables
from agentstream.service.transactions import held, transactional_id


def test_action_state_is_never_held_and_key_state_always_is() -> None:
    """Scenario: every prefix of the state layout (agentstream.service.tables).
    We expect: action runs (and the version-1 action state) are produced at once; key
    records, memory, its index, the record of sent outputs and a partition's migration
    status wait for the transaction.
    A new prefix in the layout fails here until it is placed on one side."""
    prefixes = {
        name: value
        for name, value in vars(tables).items()
        if name.startswith("_")
        and name.isupper()
        and isinstance(value, bytes)
        and len(value) == 1
        and name != "_VALUE_VERSION"
    }
    assert set(prefixes) == {
        "_KEY",
        "_INDEX",
        "_MEMORY",
        "_RUN",
        "_LEGACY_ACTION",
        "_EMITTED",
    }, prefixes
    for name in ("_RUN", "_LEGACY_ACTION"):
        assert not held(prefixes[name] + b"rest"), name
    for name in ("_KEY", "_INDEX", "_MEMORY", "_EMITTED"):
        assert held(prefixes[name] + b"rest"), name
    assert held(b"\x00migration")  # a partition's part of a migration (service.migration)


def test_transactional_ids_are_per_app_and_partition() -> None:
    assert transactional_id("orders", 3) == "orders-3"
