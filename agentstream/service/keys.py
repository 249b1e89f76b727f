"""``GET /keys/{key}``: what a worker holds for one key, or which worker holds it.

Read-only. The key's state lives with its input partition (slot ``(partition, key)``): the
worker looks the key up in every partition it owns. When it owns none of the key's state,
it answers 404 with the partition the key's records go to (Kafka's default partitioner,
the one ``agentstream send`` and most producers use) and the web address of the worker
that owns that partition, found in the consumer group's description: each worker's
consumer carries its web port in its client id (``agentstream-<app>@<port>``), and the
broker reports the host it connects from. The embedded development broker reports no
assignments: there the 404 names the partition but not the owner.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import DefaultPartitioner

from agentstream.runtime.inspection import describe_key
from agentstream.service.codecs import encode_key

if TYPE_CHECKING:
    from agentstream.service.worker import Worker

__all__ = ["client_id", "input_id", "key_view"]

log = logging.getLogger(__name__)
_WEB = re.compile(r"@(\d+)$")


def client_id(app_name: str, web_port: int) -> str:
    """The worker consumer's client id: it names the web port (found by other workers)."""
    return f"agentstream-{app_name}@{web_port}"


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2 of its bytes)."""
    ids = list(range(partitions))
    return int(DefaultPartitioner()(encode_key(key), ids, ids))


async def _owner(worker: Worker, partition: int) -> str | None:
    """The web address of the group member that owns input ``partition``, if known."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=",".join(worker.settings.bootstrap_servers),
        **worker.settings.client_kwargs(),
    )
    try:
        await admin.start()
        (response,) = await admin.describe_consumer_groups([worker.app.name])
        for group in response.groups:
            for member in group[-2 if len(group) > 6 else -1]:
                owner = _member_owner(worker, member, partition)
                if owner is not None:
                    return owner
    except Exception as exc:  # a broker without DescribeGroups, a rebalance: not known
        log.info("could not describe group %s: %r", worker.app.name, exc)
    finally:
        await admin.close()
    return None


def _member_owner(worker: Worker, member: Any, partition: int) -> str | None:
    # (member id, [instance id,] client id, client host, metadata, assignment); the member
    # id starts with the client id (some brokers leave the client id empty).
    client, host, assignment = (
        member[-4] or str(member[0]).rsplit("-", 5)[0],
        member[-3],
        member[-1],
    )
    port = _WEB.search(str(client))
    if port is None or not assignment:
        return None
    decoded = ConsumerProtocolMemberAssignment.decode(assignment)
    for topic, partitions in decoded.assignment:
        if topic == worker.app.input_topic and partition in partitions:
            return f"http://{str(host).lstrip('/')}:{port[1]}"
    return None


async def key_view(worker: Worker, key: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of ``GET /keys/{key}``."""
    operator = worker.operator
    mine = sorted(worker.assigned_partitions)
    views = {p: v for p in mine if (v := describe_key(operator, (p, key))) is not None}
    count = worker.input_partitions()
    home = partition_of(key, count) if count else None
    if views:
        primary = home if home in views else next(iter(views))
        body: dict[str, Any] = {
            "key": key,
            "partition": primary,
            "worker": worker.web_address,
            **views.pop(primary),
        }
        if views:
            body["also_on_partitions"] = views  # records of the key came on several
        return 200, body
    if home is None:
        return 404, {"error": f"key {key!r}: this worker owns no input partition yet"}
    if home in mine:
        return 404, {
            "error": f"key {key!r} has no state: partition {home}, owned by this worker, "
            "never saw it",
            "partition": home,
        }
    owner = await _owner(worker, home)
    where = f"the worker at {owner}" if owner else "another worker (not found in the group)"
    return 404, {
        "error": f"key {key!r} lives on partition {home}, owned by {where}",
        "partition": home,
        "owner": owner,
    }


def input_id(message: Any) -> str:
    """An input's event id: where the record is and what it is.

    ``topic/partition/offset`` alone repeats when a development broker is reset or a topic
    recreated, and then a new input would replay the action state of an old one; the
    record's timestamp and a digest of its key and value make the id differ, while the
    same record (redelivered, or re-read after a crash) always gets the same id.
    """
    digest = hashlib.blake2b(digest_size=6)
    for part in (message.key, message.value):
        digest.update(b"\x00" if part is None else b"\x01%d:" % len(part) + part)
    return (
        f"{message.topic}/{message.partition}/{message.offset}/{message.timestamp}/"
        f"{digest.hexdigest()}"
    )
