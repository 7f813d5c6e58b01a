"""When a record that did not sync is tried again, and when it is given up.

A record decided pending (a lookup target not coupled yet) or failed is
listed with the time of its next attempt, backing off exponentially from
``backoff_s`` up to ``backoff_max_s``. The same failure repeated
``skip_after_failures`` times in a row skips the record until an operator
acts; a skipped record has no next attempt. A pending record that stays
pending for the same reason is reported to its job once, not at every try."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from tablesync.core.effects import DueRecord
from tablesync.core.fieldmap import Mapped

__all__ = [
    "Listing",
    "NotSynced",
    "RetryPolicy",
    "backoff",
    "listing",
    "same_failure",
    "waiting_for",
]

NotSynced = Literal["pending", "failed", "skipped"]

# Business Central ends every error message with a fresh "CorrelationId: <guid>."
_CORRELATION = re.compile(r"\s*CorrelationId:\s*[0-9A-Fa-f-]{36}\.?")
# Past this many doublings the delay is the maximum anyway; the cap keeps the
# power small for a record that has been retried for a very long time.
_MAX_DOUBLINGS = 16


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    skip_after_failures: int
    backoff_s: float
    backoff_max_s: float


@dataclass(frozen=True, slots=True)
class Listing:
    """How a record that did not sync is listed after this attempt."""

    status: NotSynced
    attempts: int
    same_failures: int
    next_attempt_at: datetime | None
    reported: bool
    """Whether the attempt is an error of its job: every failure and skip is,
    a pending record only when it first waits or waits for something new."""


def same_failure(previous: str, message: str) -> bool:
    """Whether two failures of a record are the same one repeating, ignoring
    the parts an API makes new on every response."""
    return _CORRELATION.sub("", previous).strip() == _CORRELATION.sub("", message).strip()


def backoff(attempts: int, policy: RetryPolicy) -> timedelta:
    """How long after its ``attempts``-th attempt a record is tried again."""
    delay = policy.backoff_s * (2 ** min(attempts - 1, _MAX_DOUBLINGS))
    return timedelta(seconds=min(delay, policy.backoff_max_s))


def listing(
    previous: DueRecord | None,
    status: NotSynced,
    message: str,
    now: datetime,
    policy: RetryPolicy,
) -> Listing:
    """The listing of a record decided ``status`` with ``message`` at ``now``,
    listed as ``previous`` before (None: it was not listed)."""
    attempts = previous.attempts + 1 if previous else 1
    same = previous.same_failures + 1 if previous and same_failure(previous.message, message) else 1
    if status == "failed" and same >= policy.skip_after_failures:
        status = "skipped"
    next_attempt = now + backoff(attempts, policy) if status != "skipped" else None
    first_time = previous is None or previous.message != message or previous.status != status
    return Listing(
        status=status,
        attempts=attempts,
        same_failures=same,
        next_attempt_at=next_attempt,
        reported=status != "pending" or first_time,
    )


def waiting_for(mapped: Mapped | None, held_by: str | None = None) -> tuple[str, ...]:
    """The mappings whose couplings a record waits for: the targets of its
    unresolved lookups, and ``held_by`` (its own mapping, when a create in
    flight holds it back: retried once that create is coupled)."""
    targets = {
        target
        for u in (mapped.unresolved if mapped else ())
        if u.field.lookup
        for target in u.field.lookup.mappings
    }
    if held_by is not None:
        targets.add(held_by)
    return tuple(sorted(targets))
