"""One service of a shared process started again after it failed.

``run all`` holds capture of both sides, apply of every mapping and the
coordinator in one process. A service that fails for a reason its own loops
do not wait out (a defect, a refusal nothing retries) would otherwise take
every other one down with it: one mapping's fault stops the sync of all.
Here the failed service alone is built again from the settings and started
after a growing pause, what an orchestrator does to a process of its own;
the others go on. Its state is in PostgreSQL and Kafka, so a service built
again resumes where it committed, as a restarted process would. While it is
down its loops do not beat, so the process reports not ready."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import structlog

from tablesync import metrics
from tablesync.ports.clock import Clock
from tablesync.runtime.stopping import sleep_or_stop

__all__ = ["RESTART_BACKOFF_S", "Run", "supervised"]

log = structlog.get_logger()

Run = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

# Pauses before each start again, the last one repeated; a service that ran
# this long since its last start counts as well and starts from the first.
RESTART_BACKOFF_S: tuple[float, ...] = (1, 2, 5, 10, 30, 60)
HEALTHY_AFTER_S = 300.0


async def supervised(
    name: str,
    make: Callable[[], Awaitable[Run]],
    stop: asyncio.Event,
    *,
    clock: Clock,
    first: Run | None = None,
    backoff_s: Sequence[float] = RESTART_BACKOFF_S,
    healthy_after_s: float = HEALTHY_AFTER_S,
) -> None:
    """Runs the service (``first``, else what ``make`` builds) until ``stop``;
    when it fails it is logged, counted and built and started again after a
    pause. A stop during the pause ends it. Cancellation is not a failure and
    is not caught."""
    failures = 0
    ready = first
    while not stop.is_set():
        started = clock.monotonic()
        try:
            run, ready = ready or await make(), None
            await run(stop)
            return
        except Exception as exc:
            if stop.is_set():
                # Failing while being stopped is how some clients end; the
                # process is going down anyway.
                log.info("service_failed_while_stopping", service=name, error=_brief(exc))
                return
            if clock.monotonic() - started >= healthy_after_s:
                failures = 0
            delay = backoff_s[min(failures, len(backoff_s) - 1)]
            failures += 1
            metrics.service_restarted(name)
            log.error(
                "service_failed",
                service=name,
                error=_brief(exc),
                failures=failures,
                restart_in_s=delay,
                exc_info=exc,
            )
            if await sleep_or_stop(stop, delay):
                return
            log.info("service_restarting", service=name, failures=failures)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
