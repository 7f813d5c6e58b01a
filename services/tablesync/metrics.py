"""Every metric tablesync exports, each declared once here with its meaning.

Two sources feed them:

- counted in the process that sees the event: the change-to-applied latency,
  dead letters, and each side's API traffic — ``observe_applied`` /
  ``events_applied``, ``dead_lettered``, ``api_stats``;
- read from the shared state when scraped: consumer lag from Kafka, events by
  outcome and job durations from PostgreSQL's exact counters. These are the
  same whichever process serves them: ``render(StateSnapshot(...))``.

The admin server's ``/metrics`` serves both. In-process metrics of a process
without an admin server (``run apply`` alone) are not exported."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from tablesync.core.events import RecordChanged
from tablesync.core.mappings import direction_of

if TYPE_CHECKING:
    from tablesync.adapters.kafka.lag import LagReport
    from tablesync.adapters.odata.stats import ApiStats
    from tablesync.adapters.postgres.admin_queries import DurationHistogram, OutcomeTotals

__all__ = [
    "CONTENT_TYPE",
    "DEFINITIONS",
    "JOB_DURATION_BUCKETS",
    "MetricDef",
    "StateSnapshot",
    "api_stats",
    "dead_lettered",
    "deletion_scan_halted",
    "delta_link_expired",
    "echoes_skipped",
    "events_applied",
    "late_rows",
    "observe_applied",
    "read_refused",
    "render",
    "service_restarted",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    meaning: str


_PARTITION = ("group", "topic", "partition")

CONSUMER_LAG = MetricDef(
    "tablesync_consumer_lag_messages",
    "gauge",
    _PARTITION,
    "Messages on the partition after the consumer group's committed offset.",
)
CONSUMER_LAG_AGE = MetricDef(
    "tablesync_consumer_lag_seconds",
    "gauge",
    _PARTITION,
    "Age of the oldest message the group has not processed (0 when caught up).",
)
CONSUMER_COMMITTED = MetricDef(
    "tablesync_consumer_committed_offset",
    "gauge",
    _PARTITION,
    "The consumer group's committed offset (absent before its first commit).",
)
TOPIC_END = MetricDef(
    "tablesync_topic_end_offset",
    "gauge",
    ("topic", "partition"),
    "Offset the next message published on the partition will get.",
)
MAPPING_LAG = MetricDef(
    "tablesync_mapping_lag_messages",
    "gauge",
    ("mapping",),
    "Messages the mapping's apply group has not processed, over both sides' change topics.",
)
DEADLETTER_MESSAGES = MetricDef(
    "tablesync_deadletter_topic_messages",
    "gauge",
    (),
    "Messages held on the dead-letter topic, from every process.",
)
EVENTS = MetricDef(
    "tablesync_events_total",
    "counter",
    ("mapping", "direction", "outcome"),
    "Events applied, by outcome, from the job counters in the state database.",
)
JOB_DURATION = MetricDef(
    "tablesync_job_duration_seconds",
    "histogram",
    ("mapping", "direction", "kind"),
    "Start to finish of finished full and modified synchronization jobs.",
)
SOURCE_UP = MetricDef(
    "tablesync_admin_source_up",
    "gauge",
    ("source",),
    "1 when this scrape could read the source (kafka, database), else 0.",
)
APPLIED_LATENCY = MetricDef(
    "tablesync_change_applied_latency_seconds",
    "histogram",
    ("mapping", "direction"),
    "From a change's modified-on time on its side to its batch committed by apply.",
)
DEAD_LETTERED = MetricDef(
    "tablesync_dead_lettered_total",
    "counter",
    ("consumer",),
    "Events this process sent to the dead-letter topic, by consumer group.",
)
API_REQUESTS = MetricDef(
    "tablesync_api_requests_total",
    "counter",
    ("side",),
    "HTTP requests sent to the side's API, retries and token requests included.",
)
API_RETRIES = MetricDef(
    "tablesync_api_retries_total",
    "counter",
    ("side",),
    "Requests sent again after a 429, 5xx, timeout or connection error.",
)
API_THROTTLED = MetricDef(
    "tablesync_api_throttled_total",
    "counter",
    ("side",),
    "429 (service protection) responses from the side's API, inside $batch included.",
)
API_UNAVAILABLE = MetricDef(
    "tablesync_api_unavailable_total",
    "counter",
    ("side",),
    "Calls to the side's API that gave up after exhausting their retries.",
)
READS_REFUSED = MetricDef(
    "tablesync_api_reads_refused_total",
    "counter",
    ("side", "entity_set", "status"),
    "Reads the side's API refused, as apply and capture met them: 401/403 (credentials or "
    "a permission; waited out until fixed) or another 4xx of the query (narrowed down to "
    "the records refused, which become record errors).",
)

DELETION_SCAN_HALTED = MetricDef(
    "tablesync_deletion_scan_halted_total",
    "counter",
    ("side", "table", "mapping"),
    "Deletion scans that published nothing: they would have removed more than the share "
    "TABLESYNC_SYNC__DELETE_SCAN_MAX_SHARE of the mapping's couplings (alert on any).",
)
LATE_ROWS = MetricDef(
    "tablesync_capture_late_rows_total",
    "counter",
    ("side", "table"),
    "Rows a look-back pass or a reconcile published that the polls had passed: committed "
    "after a row with a later stamp was read.",
)
ECHOES_SKIPPED = MetricDef(
    "tablesync_capture_echoes_skipped_total",
    "counter",
    ("side", "table"),
    "Rows continuous capture read and did not publish: every mapping reading the table "
    "had recorded that version on the row's coupling (tablesync's own write read back).",
)
DELTA_LINK_EXPIRED = MetricDef(
    "tablesync_capture_delta_link_expired_total",
    "counter",
    ("side", "table"),
    "Dataverse delta links refused as expired: the table was read again for a new one.",
)

SERVICE_RESTARTS = MetricDef(
    "tablesync_service_restarts_total",
    "counter",
    ("service",),
    "Services of a `run all` process that failed and were started again (the others went on).",
)

DEFINITIONS: tuple[MetricDef, ...] = (
    CONSUMER_LAG,
    CONSUMER_LAG_AGE,
    CONSUMER_COMMITTED,
    TOPIC_END,
    MAPPING_LAG,
    DEADLETTER_MESSAGES,
    EVENTS,
    JOB_DURATION,
    SOURCE_UP,
    APPLIED_LATENCY,
    DEAD_LETTERED,
    API_REQUESTS,
    API_RETRIES,
    API_THROTTLED,
    API_UNAVAILABLE,
    READS_REFUSED,
    DELETION_SCAN_HALTED,
    LATE_ROWS,
    ECHOES_SKIPPED,
    DELTA_LINK_EXPIRED,
    SERVICE_RESTARTS,
)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
JOB_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def _doc(d: MetricDef) -> str:
    return d.meaning


# In-process metrics: module-level, registered in no global registry, so
# importing this module twice or building two apps never collides.
_applied_latency = Histogram(
    APPLIED_LATENCY.name,
    _doc(APPLIED_LATENCY),
    APPLIED_LATENCY.labels,
    buckets=LATENCY_BUCKETS,
    registry=None,
)
_dead_lettered = Counter(
    DEAD_LETTERED.name, _doc(DEAD_LETTERED), DEAD_LETTERED.labels, registry=None
)
_reads_refused = Counter(
    READS_REFUSED.name, _doc(READS_REFUSED), READS_REFUSED.labels, registry=None
)
_capture_counters = {
    d.name: Counter(d.name, _doc(d), d.labels, registry=None)
    for d in (DELETION_SCAN_HALTED, LATE_ROWS, ECHOES_SKIPPED, DELTA_LINK_EXPIRED)
}
_service_restarts = Counter(
    SERVICE_RESTARTS.name, _doc(SERVICE_RESTARTS), SERVICE_RESTARTS.labels, registry=None
)
_api_lock = threading.Lock()
_api_stats: list[ApiStats] = []


def observe_applied(mapping: str, direction: str, seconds: float) -> None:
    """One change applied ``seconds`` after it was made on its side."""
    _applied_latency.labels(mapping, direction).observe(max(seconds, 0.0))


def events_applied(mapping: str, events: Iterable[RecordChanged], now: datetime) -> None:
    """The changes of a committed batch; snapshot events of jobs are left out, as
    their modified-on is the record's last change, not a change just made."""
    for event in events:
        if event.snapshot_job_id is None:
            observe_applied(
                mapping, direction_of(event.side), (now - event.modified_at).total_seconds()
            )


def deletion_scan_halted(side: str, table: str, mapping: str) -> None:
    """A deletion scan stopped rather than strip ``mapping`` of its couplings."""
    _capture_counters[DELETION_SCAN_HALTED.name].labels(side, table, mapping).inc()


def late_rows(side: str, table: str, count: int) -> None:
    """``count`` rows published that were committed after the polls passed their stamps."""
    if count:
        _capture_counters[LATE_ROWS.name].labels(side, table).inc(count)


def echoes_skipped(side: str, table: str, count: int) -> None:
    """``count`` rows not published: versions their couplings record already."""
    if count:
        _capture_counters[ECHOES_SKIPPED.name].labels(side, table).inc(count)


def delta_link_expired(side: str, table: str) -> None:
    _capture_counters[DELTA_LINK_EXPIRED.name].labels(side, table).inc()


def service_restarted(service: str) -> None:
    """``service`` of a shared process failed and is to be started again."""
    _service_restarts.labels(service).inc()


def dead_lettered(consumer: str) -> None:
    """One event sent to the dead-letter topic by ``consumer`` (its group id)."""
    _dead_lettered.labels(consumer).inc()


def read_refused(side: str, entity_set: str, status: int | None) -> None:
    """One read the side's API refused (``status`` None: no answer, a token refused)."""
    _reads_refused.labels(side, entity_set, str(status or "")).inc()


def api_stats(side: str, stats: ApiStats) -> None:
    """Exports a connector's running totals; call once when the connector is opened.

    Every connector registered stays counted after it is closed, so the totals
    per side only grow, as counters must."""
    with _api_lock:
        if not any(s is stats for s in _api_stats):
            _api_stats.append(stats)


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """What the state-derived metrics show; None where the source could not be read."""

    lag: LagReport | None = None
    deadletter_messages: int | None = None
    outcomes: tuple[OutcomeTotals, ...] | None = None
    durations: tuple[DurationHistogram, ...] | None = None


class _InProcess(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from _applied_latency.collect()
        yield from _dead_lettered.collect()
        yield from _service_restarts.collect()
        yield from _reads_refused.collect()
        for counter in _capture_counters.values():
            yield from counter.collect()
        with _api_lock:
            registered = list(_api_stats)
        totals: dict[str, dict[str, int]] = {}
        for stats in registered:
            per_side = totals.setdefault(stats.side, {})
            for key, value in stats.as_dict().items():
                per_side[key] = per_side.get(key, 0) + value
        for d, key in (
            (API_REQUESTS, "requests"),
            (API_RETRIES, "retries"),
            (API_THROTTLED, "throttled"),
            (API_UNAVAILABLE, "unavailable"),
        ):
            family = CounterMetricFamily(d.name, _doc(d), labels=d.labels)
            for side, values in sorted(totals.items()):
                family.add_metric([side], values.get(key, 0))
            yield family


class _State(Collector):
    def __init__(self, snapshot: StateSnapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._s
        up = GaugeMetricFamily(SOURCE_UP.name, _doc(SOURCE_UP), labels=SOURCE_UP.labels)
        up.add_metric(["kafka"], 1.0 if s.lag is not None else 0.0)
        up.add_metric(["database"], 1.0 if s.outcomes is not None else 0.0)
        yield up
        if s.lag is not None:
            yield from _lag_families(s.lag)
        if s.deadletter_messages is not None:
            dl = GaugeMetricFamily(DEADLETTER_MESSAGES.name, _doc(DEADLETTER_MESSAGES))
            dl.add_metric([], float(s.deadletter_messages))
            yield dl
        if s.outcomes is not None:
            events = CounterMetricFamily(EVENTS.name, _doc(EVENTS), labels=EVENTS.labels)
            for o in s.outcomes:
                for outcome, value in o.counts.items():
                    events.add_metric([o.mapping, o.direction, outcome], value)
            yield events
        if s.durations is not None:
            jobs = HistogramMetricFamily(
                JOB_DURATION.name, _doc(JOB_DURATION), labels=JOB_DURATION.labels
            )
            for h in s.durations:
                buckets = [(_le(le), float(n)) for le, n in h.buckets]
                buckets.append(("+Inf", float(h.count)))
                jobs.add_metric([h.mapping, h.direction, h.kind], buckets, h.total_s)
            yield jobs


def _lag_families(report: LagReport) -> Iterator[Metric]:
    lag = GaugeMetricFamily(CONSUMER_LAG.name, _doc(CONSUMER_LAG), labels=CONSUMER_LAG.labels)
    age = GaugeMetricFamily(
        CONSUMER_LAG_AGE.name, _doc(CONSUMER_LAG_AGE), labels=CONSUMER_LAG_AGE.labels
    )
    committed = GaugeMetricFamily(
        CONSUMER_COMMITTED.name, _doc(CONSUMER_COMMITTED), labels=CONSUMER_COMMITTED.labels
    )
    end = GaugeMetricFamily(TOPIC_END.name, _doc(TOPIC_END), labels=TOPIC_END.labels)
    ends: dict[tuple[str, str], int] = {}
    for p in report.partitions:
        labels = [p.group, p.topic, str(p.partition)]
        lag.add_metric(labels, float(p.lag))
        age.add_metric(labels, p.oldest_age_s or 0.0)
        if p.committed is not None:
            committed.add_metric(labels, float(p.committed))
        ends[(p.topic, str(p.partition))] = p.end
    for (topic, partition), offset in sorted(ends.items()):
        end.add_metric([topic, partition], float(offset))
    per_mapping = GaugeMetricFamily(MAPPING_LAG.name, _doc(MAPPING_LAG), labels=MAPPING_LAG.labels)
    for m in report.mappings():
        per_mapping.add_metric([m.mapping], float(m.lag))
    yield from (lag, age, committed, end, per_mapping)


def _le(bound: float) -> str:
    return repr(float(bound))


def render(snapshot: StateSnapshot, *, process: bool = True) -> bytes:
    """The Prometheus text exposition of the in-process and state metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_InProcess())
    registry.register(_State(snapshot))
    if process:
        ProcessCollector(registry=registry)
    return generate_latest(registry)
