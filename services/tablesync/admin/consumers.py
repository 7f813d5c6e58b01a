"""The consumer groups tablesync's services run, with the topics each one reads.

These names are the ones the services subscribe with (``runtime/apply.py``,
``capture.py``, ``coordinator.py``); a test checks that a running stack has
exactly these groups, so a rename there cannot leave the lag view behind."""

from __future__ import annotations

from tablesync.adapters.kafka import Topics
from tablesync.adapters.kafka.lag import GroupSpec
from tablesync.core.mappings import MappingSet

__all__ = ["apply_group", "consumer_groups"]


def apply_group(topics: Topics, mapping: str) -> str:
    return f"{topics.prefix}tablesync.apply.{mapping}"


def consumer_groups(topics: Topics, mappings: MappingSet) -> list[GroupSpec]:
    """Apply of every mapping (in dependency order), then capture and the coordinator."""
    groups = [
        GroupSpec(
            group=apply_group(topics, m.name),
            topics=(topics.cdc("bc", m.bc_table), topics.cdc("dataverse", m.dataverse_table)),
            service="apply",
            mapping=m.name,
        )
        for m in mappings.mappings
    ]
    groups.extend(
        GroupSpec(f"{topics.prefix}tablesync.capture.{side}", (topics.snapshots,), "capture")
        for side in ("bc", "dataverse")
    )
    groups.append(
        GroupSpec(f"{topics.prefix}tablesync.coordinator", (topics.commands,), "coordinator")
    )
    # The coordinator only listens to outcomes from the moment it starts.
    groups.append(
        GroupSpec(
            f"{topics.prefix}tablesync.coordinator.outcomes",
            (topics.outcomes,),
            "coordinator",
            reset="latest",
        )
    )
    return groups
