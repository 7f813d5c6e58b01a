"""Topic names and the partition counts tablesync declares for them.

Pure naming: the Kafka adapter creates these topics on the broker, the
in-memory log creates the same ones, and the services only ever ask for
names, so a name or a partition count is decided here once for both."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tablesync.core.events import Side

__all__ = ["TopicSpec", "Topics"]

# Kafka's own rule for a topic name.
_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Retain captured changes long enough to replay a window after a mapping fix.
_CDC_RETENTION_MS = 14 * 24 * 3600 * 1000


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
