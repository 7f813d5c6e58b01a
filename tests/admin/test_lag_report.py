"""Lag arithmetic and the per-mapping totals, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from tablesync.adapters.kafka import Topics
from tablesync.adapters.kafka.lag import LagReport, PartitionLag, position_and_lag
from tablesync.admin.consumers import consumer_groups
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tests.integration.stack import DEFAULT_MAPPINGS


def test_position_and_lag() -> None:
    assert position_and_lag(5, 0, 9, "earliest") == (5, 4)
    assert position_and_lag(9, 0, 9, "earliest") == (9, 0)
    # Never committed: the group starts where its reset policy says.
    assert position_and_lag(None, 2, 9, "earliest") == (2, 7)
    assert position_and_lag(None, 2, 9, "latest") == (9, 0)
    # Committed below the log start (retention removed records): reads from the start.
    assert position_and_lag(1, 4, 9, "earliest") == (4, 5)
    assert position_and_lag(0, 0, 0, "earliest") == (0, 0)


def test_totals_per_mapping() -> None:
    report = LagReport(
        read_at=datetime(2026, 1, 5, tzinfo=UTC),
        partitions=(
            PartitionLag("g.A", "apply", "A", "cdc.bc.x", 0, 1, 4, 3, 2.0),
            PartitionLag("g.A", "apply", "A", "cdc.dataverse.y", 0, 0, 5, 5, 9.5),
            PartitionLag("g.B", "apply", "B", "cdc.bc.z", 0, 7, 7, 0, None),
            PartitionLag("g.c", "coordinator", None, "sync.commands", 0, 2, 3, 1, 1.0),
        ),
    )
    totals = {m.mapping: (m.lag, m.oldest_age_s, m.partitions) for m in report.mappings()}
    assert totals == {"A": (8, 9.5, 2), "B": (0, None, 1)}
    assert report.total == 9
    as_dict = report.as_dict()
    assert as_dict["total"] == 9 and len(as_dict["partitions"]) == 4  # type: ignore[arg-type]


def test_the_groups_of_the_default_mappings() -> None:
    mappings = build_mappings(yaml.safe_load(DEFAULT_MAPPINGS.read_text()), catalog_tables())
    groups = {g.group: g for g in consumer_groups(Topics(prefix="p."), mappings)}
    assert set(groups) == {
        *(f"p.tablesync.apply.{m}" for m in mappings.names()),
        "p.tablesync.capture.bc",
        "p.tablesync.capture.dataverse",
        "p.tablesync.coordinator",
        "p.tablesync.coordinator.outcomes",
    }
    assert groups["p.tablesync.apply.CUSTOMER"].topics == (
        "p.cdc.bc.customers",
        "p.cdc.dataverse.accounts",
    )
    assert groups["p.tablesync.coordinator.outcomes"].reset == "latest"
