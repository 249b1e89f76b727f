"""State behind the runtime's ports: partitioned RocksDB with a Kafka changelog.

- :class:`ChangelogStore` (:mod:`~agentstream.state.changelog`): one app's key-value state,
  one RocksDB database per partition, every change produced to the changelog topic;
- :func:`~agentstream.state.recovery.recover` (:mod:`~agentstream.state.recovery`): a
  partition's database caught up with its changelog when the partition is assigned;
- the errors of the layer, :class:`StateStoreError` and :class:`PartitionNotAssignedError`
  (drawn in :mod:`agentstream.errors`).

The operator's key records and action state are kept on it by
:mod:`agentstream.service.tables`; the in-memory backends of the same ports live beside the
ports (:class:`~agentstream.runtime.records.InMemoryKeyState`,
:class:`~agentstream.runtime.action_state.InMemoryActionStateStore`).
"""

from agentstream.errors import PartitionNotAssignedError, StateStoreError
from agentstream.state.changelog import ChangelogStore
from agentstream.state.recovery import RecoveryStats

__all__ = ["ChangelogStore", "PartitionNotAssignedError", "RecoveryStats", "StateStoreError"]
