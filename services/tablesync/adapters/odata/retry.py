"""How long to wait before sending a request again.

Backoff is exponential with full jitter (a uniformly random wait up to the capped
exponential), which spreads out the retries of many concurrent callers. A server's
``Retry-After`` always wins: Dataverse and Business Central extend the penalty of a
client that comes back early."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from tablesync.settings import ApiSettings

__all__ = ["RetryPolicy", "retry_after_s"]

# RFC 9110 says whole seconds; a fraction is tolerated because some proxies send one.
_SECONDS_RE = re.compile(r"[0-9]{1,9}(?:\.[0-9]+)?")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    base_s: float
    max_s: float
    random: Callable[[], float] = field(default=random.random, compare=False)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> RetryPolicy:
        return cls(settings.max_retries, settings.backoff_base_s, settings.backoff_max_s)

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number ``retry`` (0-based)."""
        ceiling = min(self.max_s, self.base_s * (2.0 ** min(retry, 62)))
        return self.random() * ceiling


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    None when the header is absent or unreadable, so the caller falls back to backoff."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS_RE.fullmatch(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
