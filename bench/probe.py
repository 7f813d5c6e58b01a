"""``python -m bench.probe <tablesync arguments>``: the ``tablesync`` command with
stage timers around the engine's steps, written as JSON when the process exits.

The services log one line per batch with its total time, not how that time
splits between reading, the destination API, Kafka and PostgreSQL. The probe
wraps those steps from outside (no engine code changes) with two clock reads
per call, which is nothing next to the network round trip each step makes.

Every timer is wall time of an ``await``: it includes the time the event loop
spent on other tasks while the step waited, which is what the step cost the
pipeline in a process that runs one busy service at a time."""

from __future__ import annotations

import atexit
import functools
import inspect
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OUT_ENV", "Timer", "install", "load"]

OUT_ENV = "BENCH_PROBE_OUT"

Call = dict[str, Any]
"""The arguments of a call by parameter name (``self`` included)."""
Counter = Callable[[Call, Any], int]


@dataclass(slots=True)
class Timer:
    seconds: float = 0.0
    """The calls' durations added up (more than wall time when calls overlap)."""
    calls: int = 0
    records: int = 0
    spans: list[tuple[float, float, int]] = field(default_factory=list)
    """(start, end, records) of every call, so a bench can keep the calls of its
    measurement window."""

    def add(self, started: float, ended: float, records: int) -> None:
        self.seconds += ended - started
        self.calls += 1
        self.records += records
        self.spans.append((started, ended, records))

    def within(self, start: float, end: float) -> Timer:
        """The calls that started and ended inside [start, end]."""
        kept = [s for s in self.spans if s[0] >= start and s[1] <= end]
        return Timer(
            seconds=sum(e - b for b, e, _ in kept),
            calls=len(kept),
            records=sum(r for _, _, r in kept),
            spans=kept,
        )

    def busy(self) -> float:
        """Wall time during which at least one call was in flight: calls made side
        by side (apply works on partitions concurrently) count once."""
        total = 0.0
        reach = float("-inf")
        for begin, end, _ in sorted(self.spans):
            if end <= reach:
                continue
            total += end - max(begin, reach)
            reach = end
        return total

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 4),
            "calls": self.calls,
            "records": self.records,
            "spans": [(round(b, 4), round(e, 4), r) for b, e, r in self.spans],
        }


_timers: dict[str, Timer] = {}


def _timer(key: str) -> Timer:
    timer = _timers.get(key)
    if timer is None:
        timer = _timers[key] = Timer()
    return timer


def _none(_call: Call, _result: Any) -> int:
    return 0


def _wrap(
    owner: type,
    name: str,
    stage: str,
    *,
    label: Callable[[Call], str] | None = None,
    count: Counter = _none,
    empty_stage: str | None = None,
) -> None:
    """Times ``owner.name`` (a coroutine function) under ``stage[/label]``; a call
    counted as zero records goes under ``empty_stage`` when one is given."""
    original = getattr(owner, name)
    parameters = list(inspect.signature(original).parameters)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        # time.time(), not perf_counter: spans are compared across processes.
        started = time.time()
        result = None
        try:
            result = await original(*args, **kwargs)
            return result
        finally:
            ended = time.time()
            call = dict(zip(parameters, args, strict=False))
            call.update(kwargs)
            records = count(call, result)
            key = empty_stage if (empty_stage and records == 0) else stage
            suffix = f"/{label(call)}" if label else ""
            _timer(key + suffix).add(started, ended, records)

    setattr(owner, name, timed)


def _wrap_pages(owner: type, name: str, stage: str) -> None:
    """Times the waits of an async generator of ``(rows, deleted)`` pages."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        pages = original(*args, **kwargs)
        while True:
            started = time.time()
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                _timer(stage).add(started, time.time(), 0)
                return
            _timer(stage).add(started, time.time(), len(page[0]) + len(page[1]))
            yield page

    setattr(owner, name, timed)


def _events(_call: Call, result: Any) -> int:
    return sum(len(v) for v in result.values()) if isinstance(result, dict) else 0


def install() -> None:
    """Wraps the steps of capture, apply and the Kafka consumer."""
    # Imported here so that ``bench.probe`` can be imported without the engine loaded.
    from tablesync.adapters.kafka.consumer import BatchConsumer  # noqa: PLC0415
    from tablesync.adapters.postgres.apply_state import ApplyStateStore  # noqa: PLC0415
    from tablesync.runtime.apply import ApplyService  # noqa: PLC0415
    from tablesync.runtime.capture import CaptureService  # noqa: PLC0415
    from tablesync.runtime.facts import Reader  # noqa: PLC0415
    from tablesync.runtime.writes import Writer  # noqa: PLC0415

    def mapping(call: Call) -> str:
        return str(call["self"].mapping_name)

    def side_of(call: Call) -> str:
        return str(call["self"].side)

    _wrap(
        CaptureService,
        "_serve",
        "capture.snapshot",
        label=side_of,
    )
    _wrap_pages(CaptureService, "_snapshot_rows", "capture.snapshot_read")

    def publish_kind(call: Call) -> str:
        kind = "snapshot" if call["job_id"] is not None else "changes"
        return f"{call['self'].side}/{kind}"

    _wrap(
        CaptureService,
        "_publish_rows",
        "capture.publish",
        label=publish_kind,
        count=lambda call, _r: len(call["rows"]),
    )
    _wrap(
        CaptureService,
        "_poll_once",
        "capture.poll",
        label=side_of,
    )
    _wrap(
        BatchConsumer,
        "next_batch",
        "kafka.fetch",
        label=lambda call: str(call["self"].group_id),
        count=_events,
        empty_stage="kafka.fetch_empty",
    )
    _wrap(
        BatchConsumer,
        "commit",
        "kafka.commit",
        label=lambda call: str(call["self"].group_id),
    )
    _wrap(ApplyService, "_process", "apply.batch", label=mapping, count=_batch_events)
    _wrap(ApplyService, "_reload_mappings", "apply.reload_mappings", label=mapping)
    _wrap(ApplyService, "_publish_outcomes", "apply.publish_outcomes", label=mapping)
    _wrap(ApplyService, "_retry_due", "apply.retries", label=mapping)
    _wrap(ApplyStateStore, "positions", "apply.read_positions")
    _wrap(Reader, "load_couplings", "apply.read_couplings", label=mapping)
    _wrap(Reader, "load_statuses", "apply.read_statuses", label=mapping)
    _wrap(
        Reader,
        "fetch",
        "apply.read_destination",
        label=mapping,
        count=lambda call, _r: len(call["work"]),
    )
    _wrap(Reader, "resolve_lookups", "apply.resolve_lookups", label=mapping)
    _wrap(ApplyStateStore, "record_intents", "apply.write_intents")
    _wrap(ApplyStateStore, "announce_writes", "apply.write_intents")
    _wrap(Reader, "load_deleted", "apply.read_deleted", label=mapping)
    _wrap(
        Writer,
        "_write_side",
        "apply.destination_write",
        label=mapping,
        count=lambda call, _r: len(call["pairs"]),
    )
    _wrap(
        ApplyStateStore,
        "commit",
        "apply.state_commit",
        label=lambda call: str(call["effects"].mapping),
        count=lambda call, _r: len(call["effects"].couplings),
    )


def _batch_events(call: Call, _result: Any) -> int:
    return sum(len(records) for records in call["batch"].values())


def dump(path: Path) -> None:
    payload = {
        "pid": os.getpid(),
        "argv": sys.argv[1:],
        "timers": {k: t.as_dict() for k, t in sorted(_timers.items())},
    }
    path.write_text(json.dumps(payload, indent=1))


def load(path: Path) -> dict[str, Timer]:
    """The timers a probed process wrote; empty when it wrote none."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    timers: dict[str, Timer] = {}
    for key, value in payload.get("timers", {}).items():
        timers[key] = Timer(
            seconds=value["seconds"],
            calls=value["calls"],
            records=value["records"],
            spans=[(b, e, r) for b, e, r in value["spans"]],
        )
    return timers


def main() -> None:
    install()
    out = os.environ.get(OUT_ENV)
    if out:
        atexit.register(dump, Path(out))
    from tablesync.cli.main import main as tablesync_main  # noqa: PLC0415

    sys.argv = ["tablesync", *sys.argv[1:]]
    tablesync_main()


if __name__ == "__main__":
    main()
