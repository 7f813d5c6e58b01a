"""Topic names and the partition counts tablesync declares for them."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tablesync.core.events import Side

__all__ = ["TopicSpec", "Topics", "delete_topics", "ensure_topics"]

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Retain captured changes long enough to replay a window after a mapping fix.
_CDC_RETENTION_MS = 14 * 24 * 3600 * 1000
_LEADER_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()
    replication_factor: int = 1


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic name tablesync uses, under an optional prefix."""

    prefix: str = ""
    partitions: int = 6
    replication_factor: int = 1

    def _name(self, name: str) -> str:
        full = f"{self.prefix}{name}"
        if not _LEGAL.match(full):
            raise ValueError(f"illegal Kafka topic name {full!r}")
        return full

    def cdc(self, side: Side, table: str) -> str:
        return self._name(f"cdc.{side}.{table}")

    @property
    def commands(self) -> str:
        return self._name("sync.commands")

    @property
    def snapshots(self) -> str:
        return self._name("sync.snapshots")

    @property
    def outcomes(self) -> str:
        return self._name("sync.outcomes")

    @property
    def deadletter(self) -> str:
        return self._name("sync.deadletter")

    def cdc_spec(self, side: Side, table: str) -> TopicSpec:
        return TopicSpec(
            self.cdc(side, table),
            self.partitions,
            (("retention.ms", str(_CDC_RETENTION_MS)),),
            self.replication_factor,
        )

    def control_specs(self) -> list[TopicSpec]:
        # Commands run strictly in order, so they live on one partition.
        rf = self.replication_factor
        return [
            TopicSpec(self.commands, 1, replication_factor=rf),
            TopicSpec(self.snapshots, 1, replication_factor=rf),
            TopicSpec(self.outcomes, 3, replication_factor=rf),
            TopicSpec(self.deadletter, 1, (("retention.ms", str(_CDC_RETENTION_MS)),), rf),
        ]


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
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
    bootstrap_servers: str, prefix: str, *, kinds: tuple[str, ...] = ("cdc.", "sync.")
) -> list[str]:
    """Deletes tablesync's topics under ``prefix`` and waits until the broker
    no longer lists them; returns their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
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
