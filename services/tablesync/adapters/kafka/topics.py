"""The topics of ``core.topics`` on the broker: created where missing, deleted
under a prefix. The names themselves are re-exported from there."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tablesync.adapters.kafka.connection import KafkaConnection
from tablesync.core.topics import Topics, TopicSpec

__all__ = ["TopicSpec", "Topics", "delete_topics", "ensure_topics"]

_LEADER_TIMEOUT_S = 30.0


async def ensure_topics(kafka: KafkaConnection, specs: list[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await kafka.start(admin)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                name=s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                topic_configs=dict(s.config),
            )
            for s in missing
        ]
        # Another service may create one between our listing and our request.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        await _until_led(admin, [s.name for s in missing])
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Waits until every partition of the new topics has a leader, so the first
    produce and fetch do not bounce off a partition still being elected."""
    deadline = time.monotonic() + _LEADER_TIMEOUT_S
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)


async def delete_topics(
    kafka: KafkaConnection, prefix: str, *, kinds: tuple[str, ...] = ("cdc.", "sync.")
) -> list[str]:
    """Deletes tablesync's topics under ``prefix`` and waits until the broker
    no longer lists them; returns their names."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await kafka.start(admin)
    try:
        mine = [
            t
            for t in await admin.list_topics()
            if t.startswith(prefix) and t[len(prefix) :].startswith(kinds)
        ]
        if not mine:
            return []
        await admin.delete_topics(mine)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not set(mine) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.2)
        return mine
    finally:
        await admin.close()
