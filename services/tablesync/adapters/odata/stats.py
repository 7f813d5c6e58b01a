"""Running totals of one side's API traffic, for the runtime to turn into metrics.

The connectors only count; exporting is the runtime's job, so this module imports
no metrics library. Counters only grow; ``snapshot`` gives a frozen copy that can be
diffed against the previous one."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["ApiStats", "UserStats"]


@dataclass(slots=True)
class ApiStats:
    """Totals since the connector was opened."""

    side: str
    requests: int = 0
    """HTTP requests sent, retries and token requests included."""
    retries: int = 0
    """Requests sent again after a 429, 5xx, timeout or connection error."""
    throttled: int = 0
    """429 responses, including those inside a $batch."""
    unavailable: int = 0
    """Calls that gave up with ``ApiUnavailable``."""
    token_fetches: int = 0
    """Requests for a new access token (OAuth client credentials only)."""
    rows_read: int = 0
    records_written: int = 0
    records_refused: int = 0
    """Write results that were Rejected, Missing or Stale."""

    def snapshot(self) -> ApiStats:
        return replace(self)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "side"}


@dataclass(slots=True)
class UserStats:
    """One application user's share of a side's traffic (``ApiStats`` counts the side)."""

    user: str
    """The user's client id, or ``token<n>`` for a static token: never a secret."""
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    """429 answers to this user's requests (a $batch's own, not its parts')."""
    in_flight: int = 0
    """Requests of this user on the wire now."""
    peak_in_flight: int = 0

    def snapshot(self) -> UserStats:
        return replace(self)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "user"}
