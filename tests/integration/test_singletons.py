"""The singletons' leases on the real PostgreSQL, in real time: a holder cut
off from the database stops within ``VALID_SHARE * ttl`` of its last
renewal and a standby takes over within ``ttl + renew`` of it, never while
the first still works; a restart of the database (the holder's connection
terminated) ends nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tablesync.adapters.postgres import PostgresLease
from tablesync.ports.clock import SystemClock
from tablesync.runtime.lease import VALID_SHARE, Lease
from tests.integration.conftest import state_dsn, state_template
from tests.integration.stack import wait_for
from tests.leases import Cuttable, Shift, never_together, working
from tests.netproxy import TcpProxy

pytestmark = pytest.mark.integration

_SHARED = (state_dsn, state_template)

TTL_S = 2.0
RENEW_S = 0.4
# What the event loop of a loaded machine may add to a bound.
SLACK_S = 0.5


def through(dsn: str, proxy: TcpProxy) -> str:
    parts = urlsplit(dsn)
    user, _, _ = parts.netloc.rpartition("@")
    netloc = f"{user}@{proxy.address}" if user else proxy.address
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def lease(singleton: Cuttable, what: str) -> Lease:
    return Lease(singleton, what=what, clock=SystemClock(), renew_s=RENEW_S)


async def test_a_holder_cut_off_from_the_database_stops_before_a_standby_takes_over(
    state_dsn: str,
) -> None:
    port = int(urlsplit(state_dsn).netloc.rsplit(":", 1)[1])
    async with TcpProxy(port) as proxy:
        await proxy.listen()
        first = Cuttable(PostgresLease(through(state_dsn, proxy), "coordinator", ttl_s=TTL_S))
        second = Cuttable(PostgresLease(state_dsn, "coordinator", ttl_s=TTL_S))
        shifts: list[Shift] = []
        stop = asyncio.Event()
        a = asyncio.ensure_future(lease(first, "a").serve(stop, working("a", shifts)))
        try:
            await wait_for(_async(lambda: len(first.renewed) >= 3), what="a to hold and renew")
            b = asyncio.ensure_future(lease(second, "b").serve(stop, working("b", shifts)))
            await wait_for(_async(lambda: len(first.renewed) >= 6), what="a to renew on")
            assert [s.holder for s in shifts] == ["a"]

            await proxy.cut()  # the database is gone for a: nothing it sends arrives
            last_renewal = first.renewed[-1]
            await wait_for(_async(lambda: len(shifts) == 2), timeout_s=3 * TTL_S, what="b")
        finally:
            stop.set()
            await asyncio.wait_for(a, timeout=30)
        await asyncio.wait_for(b, timeout=30)

    held, took_over = shifts
    assert held.ended is not None
    assert held.ended - last_renewal <= VALID_SHARE * TTL_S + SLACK_S
    assert took_over.began - last_renewal <= TTL_S + RENEW_S + SLACK_S
    never_together(shifts)


async def test_lease_lost_the_database_restarted_under_the_holder(state_dsn: str) -> None:
    """What a restart does to the holder's connection (``pg_terminate_backend``):
    the lock an advisory lock was would be gone, and a standby would start
    beside the holder. The lease is a row: the holder notices (its renewal
    fails), renews on a new connection within its bound, and no standby starts."""
    first = Cuttable(PostgresLease(state_dsn, "coordinator", ttl_s=TTL_S))
    second = Cuttable(PostgresLease(state_dsn, "coordinator", ttl_s=TTL_S))
    shifts: list[Shift] = []
    stop = asyncio.Event()
    a = asyncio.ensure_future(lease(first, "a").serve(stop, working("a", shifts)))
    b: asyncio.Future[None] | None = None
    conn = await asyncpg.connect(state_dsn)
    try:
        await wait_for(_async(lambda: len(first.renewed) >= 2), what="a to hold and renew")
        b = asyncio.ensure_future(lease(second, "b").serve(stop, working("b", shifts)))
        for _ in range(3):
            terminated = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database()"
                " AND application_name = 'tablesync lease coordinator'"
            )
            assert terminated >= 1
            cut_at, renewals = time.monotonic(), len(first.renewed)
            await wait_for(
                _async(lambda n=renewals: len(first.renewed) > n + 1),
                timeout_s=VALID_SHARE * TTL_S + SLACK_S,
                what="a to renew on a new connection",
            )
            assert first.renewed[renewals] - cut_at <= VALID_SHARE * TTL_S
        assert [s.holder for s in shifts] == ["a"]
        assert shifts[0].ended is None
    finally:
        await conn.close()
        stop.set()
        await asyncio.wait_for(a, timeout=30)
        if b is not None:
            await asyncio.wait_for(b, timeout=30)


def _async(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return condition()

    return probe
