"""Fixtures of the port contract suites: the connectors' emulators on real sockets, and
a clock for the in-memory implementations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.connectors.conftest import connect, emulators, tag

__all__ = ["StepClock", "connect", "emulators", "tag"]


class StepClock:
    """A clock that moves ``step`` on every reading: several Dataverse writes share a
    second, every BC write gets its own millisecond."""

    def __init__(
        self,
        start: datetime = datetime(2030, 1, 1, tzinfo=UTC),
        step: timedelta = timedelta(milliseconds=250),
    ) -> None:
        self.moment = start
        self.step = step

    def now(self) -> datetime:
        self.moment += self.step
        return self.moment
