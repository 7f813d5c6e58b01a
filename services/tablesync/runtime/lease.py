"""A singleton's work, run only while its process holds the lease.

``Lease.serve(stop, work)`` waits as a standby until it takes the lease
(``ports.state.Singleton``), runs ``work`` while it holds it, renewing it
every ``renew_s``, and when it loses it stops the work at once and goes back
to waiting. The work is cancelled, as a killed process's would be, at the
await it is in: what it had not committed, the next holder does again, as
after a crash — every singleton resumes from what it committed.

The holder counts the lease as its own for ``VALID_SHARE`` of its time to
live after it *asked* for the last renewal that succeeded; the database
counts the full time to live from when it *performed* it, which is later.
So a holder cut off from the database has stopped before anyone can take
its lease over, however its clock and the database's are set (they need
only run at about the same rate). The bounds, in seconds:

- a holder that cannot renew stops within ``VALID_SHARE * ttl_s`` of its
  last renewal;
- a standby takes over within ``ttl_s + renew_s`` of the holder's last
  renewal, and within ``renew_s`` of a release (a holder that stops).

A process frozen past its lease (a long pause of the VM, SIGSTOP) may run a
step before its watchdog wakes up: ``check`` before a side effect refuses
it (``LeasedPublisher`` does so before every publish)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

import structlog

from tablesync.adapters.transient import TRANSIENT
from tablesync.errors import LeaseLost
from tablesync.ports.clock import Clock
from tablesync.ports.log import Message, Publisher
from tablesync.ports.state import Singleton
from tablesync.runtime.stopping import sleep_or_stop
from tablesync.settings import LEASE_VALID_SHARE

__all__ = ["VALID_SHARE", "Lease", "LeasedPublisher"]

log = structlog.get_logger()

VALID_SHARE = LEASE_VALID_SHARE

Work = Callable[[asyncio.Event], Awaitable[None]]


class Lease:
    """The lease of one singleton ``what`` (``coordinator``, ``capture bc``)."""

    def __init__(self, singleton: Singleton, *, what: str, clock: Clock, renew_s: float) -> None:
        if not 0 < renew_s < singleton.ttl_s * VALID_SHARE:
            raise ValueError(
                f"{what}: the lease is renewed every {renew_s} s, which must be shorter "
                f"than {VALID_SHARE:.0%} of its time to live ({singleton.ttl_s} s)"
            )
        self.what = what
        self._singleton = singleton
        self._clock = clock
        self._renew_s = renew_s
        self._epoch: int | None = None
        self._valid_until = 0.0
        self.holds = 0
        """How many times this process took the lease (each a new epoch)."""

    @property
    def epoch(self) -> int | None:
        """The epoch of the hold in force, None while this process holds none."""
        return self._epoch if self.held else None

    @property
    def held(self) -> bool:
        return self._epoch is not None and self._clock.monotonic() < self._valid_until

    def check(self) -> None:
        """Raises ``LeaseLost`` unless this process holds the lease now."""
        if not self.held:
            raise LeaseLost(self.what)

    async def serve(
        self, stop: asyncio.Event, work: Work, *, standby: Callable[[], None] | None = None
    ) -> None:
        """Runs ``work(stop)`` whenever the lease is held, until ``stop``; an
        error of the work (other than the lease lost) is raised. ``standby``
        is called each time a standby tries to take the lease (a health
        beat: a standby waiting its turn is ready)."""
        while not stop.is_set():
            if not await self._take(stop, standby):
                return
            try:
                if not await self._run(stop, work):
                    return
            finally:
                await self._release()

    async def _take(self, stop: asyncio.Event, standby: Callable[[], None] | None) -> bool:
        """Waits until this process holds the lease; False when a stop came first."""
        waiting = False
        while not stop.is_set():
            if standby is not None:
                standby()
            asked = self._clock.monotonic()
            try:
                # An answer later than this could not be counted on anyway.
                async with asyncio.timeout(self._valid_s):
                    epoch = await self._singleton.try_hold()
            except TRANSIENT as exc:
                log.warning("lease_unavailable", service=self.what, error=_error(exc))
                epoch = None
            if epoch is not None:
                self._held(epoch, asked)
                self.holds += 1
                log.info("lease_taken", service=self.what, epoch=epoch)
                return True
            if not waiting:
                log.info("lease_standby", service=self.what, retry_every_s=self._renew_s)
                waiting = True
            await sleep_or_stop(stop, self._renew_s)
        return False

    @property
    def _valid_s(self) -> float:
        return self._singleton.ttl_s * VALID_SHARE

    def _held(self, epoch: int, asked: float) -> None:
        self._epoch = epoch
        self._valid_until = asked + self._valid_s

    async def _run(self, stop: asyncio.Event, work: Work) -> bool:
        """Runs the work while the lease holds: True when it was lost (the work
        is stopped), False when the work ended."""
        working = asyncio.ensure_future(work(stop))
        watching = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait((working, watching), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (working, watching):
                task.cancel()
            await asyncio.gather(working, watching, return_exceptions=True)
        if watching.done() and not watching.cancelled():
            if (error := watching.exception()) is not None:
                raise error
            return True  # lost: the work was stopped
        error = working.exception()
        if isinstance(error, LeaseLost):
            self._lost("a side effect came after the lease ended")
            return True
        if error is not None:
            raise error
        return False

    async def _watch(self) -> None:
        """Renews the lease every ``renew_s``; returns when it is lost. Runs
        on through a stop, until the work has ended: a holder that finishes
        its step before it stops still holds the lease for that step."""
        next_at = self._clock.monotonic() + self._renew_s
        while True:
            wait = min(next_at, self._valid_until) - self._clock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            asked = self._clock.monotonic()
            left = self._valid_until - asked
            if left <= 0:
                self._lost("not renewed in time")
                return
            try:
                async with asyncio.timeout(left):
                    epoch = await self._singleton.try_hold()
            except TRANSIENT as exc:
                left = self._valid_until - self._clock.monotonic()
                if left <= 0:
                    self._lost("not renewed in time")
                    return
                # Tried again soon: a restart of the database is over in seconds.
                log.warning(
                    "lease_renewal_failed",
                    service=self.what,
                    error=_error(exc),
                    valid_for_s=round(left, 1),
                )
                next_at = self._clock.monotonic() + min(self._renew_s, left) / 4
                continue
            if epoch is None or epoch != self._epoch:
                self._lost("taken by another holder" if epoch is None else "expired meanwhile")
                return
            self._held(epoch, asked)
            next_at = asked + self._renew_s

    def _lost(self, why: str) -> None:
        log.error("lease_lost", service=self.what, epoch=self._epoch, why=why)
        self._valid_until = 0.0

    async def _release(self) -> None:
        """Ends the hold, lost or not: what it still holds, a standby takes at
        once rather than when it expires (another's hold it leaves alone)."""
        held, self._epoch, self._valid_until = self._epoch, None, 0.0
        try:
            async with asyncio.timeout(self._valid_s):
                await self._singleton.release()
        except TRANSIENT as exc:
            # It expires by itself.
            log.warning("lease_not_released", service=self.what, error=_error(exc))
        else:
            log.info("lease_released", service=self.what, epoch=held)


class LeasedPublisher:
    """A ``Publisher`` that refuses to publish (``LeaseLost``) unless its
    lease is held: a singleton's events never come from two holders."""

    def __init__(self, publisher: Publisher, lease: Lease) -> None:
        self._publisher = publisher
        self._lease = lease

    async def publish(self, message: Message) -> tuple[int, int]:
        self._lease.check()
        return await self._publisher.publish(message)

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        self._lease.check()
        return await self._publisher.publish_many(messages)

    async def partitions_for(self, topic: str) -> list[int]:
        return await self._publisher.partitions_for(topic)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
