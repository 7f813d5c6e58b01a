"""metrics.py: every exported name is declared once, and the exposition parses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tablesync import metrics
from tablesync.adapters.kafka.lag import LagReport, PartitionLag
from tablesync.adapters.odata.stats import ApiStats
from tablesync.adapters.postgres.admin_queries import DurationHistogram, OutcomeTotals
from tablesync.core.events import RecordChanged

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _families(snapshot: metrics.StateSnapshot) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = metrics.render(snapshot, process=False).decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def _declared(sample: str) -> bool:
    names = {d.name for d in metrics.DEFINITIONS}
    bases = {d.name.removesuffix("_total") for d in metrics.DEFINITIONS}
    base = sample
    for suffix in ("_bucket", "_count", "_sum", "_created", "_total"):
        base = base.removesuffix(suffix)
    return sample in names or base in bases


def test_every_metric_is_declared_once_with_a_meaning() -> None:
    names = [d.name for d in metrics.DEFINITIONS]
    assert len(names) == len(set(names))
    for d in metrics.DEFINITIONS:
        assert d.name.startswith("tablesync_")
        assert d.meaning.endswith(".") and "\n" not in d.meaning
        assert (d.kind == "counter") == d.name.endswith("_total")


def test_state_metrics_render_from_a_snapshot() -> None:
    lag = LagReport(
        read_at=NOW,
        partitions=(
            PartitionLag(
                "p.tablesync.apply.CUSTOMER",
                "apply",
                "CUSTOMER",
                "p.cdc.bc.customers",
                0,
                10,
                14,
                4,
                7.5,
            ),
            PartitionLag(
                "p.tablesync.apply.CUSTOMER",
                "apply",
                "CUSTOMER",
                "p.cdc.bc.customers",
                1,
                None,
                0,
                0,
                None,
            ),
            PartitionLag(
                "p.tablesync.coordinator", "coordinator", None, "p.sync.commands", 0, 3, 3, 0, None
            ),
        ),
    )
    snapshot = metrics.StateSnapshot(
        lag=lag,
        deadletter_messages=2,
        outcomes=(OutcomeTotals("CUSTOMER", "to_integration", {"inserted": 8, "failed": 1}),),
        durations=(
            DurationHistogram(
                "CUSTOMER", "to_integration", "full", 2, 7.0, ((1.0, 0), (5.0, 1), (15.0, 2))
            ),
        ),
    )
    found = _families(snapshot)
    assert all(_declared(name) for name in found), sorted(n for n in found if not _declared(n))
    lags = {
        (labels["group"], labels["partition"]): v
        for labels, v in found["tablesync_consumer_lag_messages"]
    }
    assert lags == {
        ("p.tablesync.apply.CUSTOMER", "0"): 4.0,
        ("p.tablesync.apply.CUSTOMER", "1"): 0.0,
        ("p.tablesync.coordinator", "0"): 0.0,
    }
    ages = {
        labels["partition"]: v
        for labels, v in found["tablesync_consumer_lag_seconds"]
        if "apply" in labels["group"]
    }
    assert ages == {"0": 7.5, "1": 0.0}
    # No committed offset, no series: a 0 would read as "committed at 0".
    assert len(found["tablesync_consumer_committed_offset"]) == 2
    assert found["tablesync_mapping_lag_messages"] == [({"mapping": "CUSTOMER"}, 4.0)]
    assert found["tablesync_deadletter_topic_messages"] == [({}, 2.0)]
    events = {labels["outcome"]: v for labels, v in found["tablesync_events_total"]}
    assert events == {"inserted": 8.0, "failed": 1.0}
    buckets = {labels["le"]: v for labels, v in found["tablesync_job_duration_seconds_bucket"]}
    assert buckets == {"1.0": 0.0, "5.0": 1.0, "15.0": 2.0, "+Inf": 2.0}
    assert found["tablesync_job_duration_seconds_sum"][0][1] == 7.0
    up = {labels["source"]: v for labels, v in found["tablesync_admin_source_up"]}
    assert up == {"kafka": 1.0, "database": 1.0}


def test_a_source_that_could_not_be_read_is_reported_down() -> None:
    found = _families(metrics.StateSnapshot())
    up = {labels["source"]: v for labels, v in found["tablesync_admin_source_up"]}
    assert up == {"kafka": 0.0, "database": 0.0}
    assert "tablesync_consumer_lag_messages" not in found


def _event(side: str, modified: datetime, job: str | None = None) -> RecordChanged:
    return RecordChanged(
        side=side,  # type: ignore[arg-type]
        table="customers",
        record_id="6f9619ff-8b86-d011-b42d-00c04fc964ff",
        op="upsert",
        modified_at=modified,
        captured_at=modified,
        snapshot_job_id=job,
    )


def _sample(
    found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(
        v for lab, v in found.get(name, []) if all(lab.get(k) == w for k, w in labels.items())
    )


def test_in_process_metrics_count_what_the_engine_reports() -> None:
    mapping = f"M{NOW.timestamp():.0f}X"
    before = _families(metrics.StateSnapshot())
    metrics.events_applied(
        mapping,
        [
            _event("bc", NOW - timedelta(seconds=0.3)),
            _event("dataverse", NOW - timedelta(seconds=4)),
            _event("bc", NOW - timedelta(days=30), job="a-snapshot-job"),
        ],
        NOW,
    )
    metrics.dead_lettered("p.tablesync.apply.TEST")
    first, second = ApiStats("bc"), ApiStats("bc")
    metrics.api_stats("bc", first)
    metrics.api_stats("bc", second)
    metrics.api_stats("bc", first)  # registering twice counts once
    first.requests, first.throttled, first.retries = 10, 2, 3
    second.requests, second.throttled = 5, 1
    after = _families(metrics.StateSnapshot())
    count = "tablesync_change_applied_latency_seconds_count"
    assert _sample(after, count, mapping=mapping, direction="to_integration") == 1
    assert _sample(after, count, mapping=mapping, direction="from_integration") == 1
    le_half = "tablesync_change_applied_latency_seconds_bucket"
    assert _sample(after, le_half, mapping=mapping, direction="to_integration", le="0.5") == 1
    assert _sample(after, le_half, mapping=mapping, direction="from_integration", le="3.0") == 0
    dl = "tablesync_dead_lettered_total"
    assert _sample(after, dl) - _sample(before, dl) == 1
    for name, grew in (
        ("tablesync_api_requests_total", 15),
        ("tablesync_api_throttled_total", 3),
        ("tablesync_api_retries_total", 3),
    ):
        assert _sample(after, name, side="bc") - _sample(before, name, side="bc") == grew
