"""What one key holds, as plain data: for ``GET /keys/{key}``, ``agentstream inspect`` and
``LocalRunner``.

Read-only: it reads the key's record, its input in progress and its recorded action runs,
and changes nothing. Values are made JSON-safe (what JSON cannot carry is shown by its
``repr``).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from agentstream.runtime.memory import memory_tree
from agentstream.runtime.records import InputRecord
from agentstream.serde import unpack_event

if TYPE_CHECKING:
    from agentstream.runtime.operator import Operator

__all__ = ["describe_input", "describe_key", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` as JSON-ready data; what JSON cannot carry becomes its ``repr``."""
    return to_jsonable_python(value, fallback=repr, bytes_mode="utf8")


def describe_input(record: InputRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "value": json_safe(record.value),
        "timestamp": record.timestamp,
        "partition": record.partition,
        "offset": record.offset,
    }


def _runs(operator: Operator, slot: Hashable, seq: int) -> list[dict[str, Any]]:
    """The recorded action runs of the key's input ``seq`` (the store lists them if it
    can: ``runs(slot, seq)``)."""
    listing = getattr(operator.action_states, "runs", None)
    if listing is None:
        return []
    described = []
    for (action, event_id), state in sorted(listing(slot, seq).items()):
        described.append(
            {
                "action": action,
                "event_id": event_id,
                "completed": state.completed,
                "memory_updates": len(state.memory_updates),
                "sent_events": [type(unpack_event(e)).type_name() for e in state.sent_events],
                "durable_calls": [
                    {"function": call.fn_id, "status": call.status, "error": call.error_type}
                    for call in state.calls
                ],
            }
        )
    return described


def describe_key(operator: Operator, slot: Hashable) -> dict[str, Any] | None:
    """Everything the operator holds for ``slot``; None for a key it never saw.

    Keys: ``seq`` (of the current or last input), ``current`` and ``pending`` inputs,
    ``busy``, ``queued_actions`` (of the input in progress), ``action_runs`` (recorded runs
    of the current input: completed or not, durable calls, sent event types) and
    ``memory`` (short-term, as nested dicts; as of now while an input runs).
    """
    record = operator.key_state.get(slot)
    if record is None:
        return None
    run = operator.run_of(slot)
    memory = memory_tree(run.short if run is not None else operator.key_state.memory(slot))
    queued = (
        [
            {"action": action.name, "event_type": type(event).type_name()}
            for action, event in run.tasks
        ]
        if run is not None
        else []
    )
    return {
        "seq": record.seq,
        "current": None if record.current is None else describe_input(record.current),
        "pending": [describe_input(r) for r in record.pending],
        "busy": run is not None,
        "queued_actions": queued,
        "action_runs": [] if record.current is None else _runs(operator, slot, record.seq),
        "memory": json_safe(memory),
    }
