"""Capture of one side and the coordinator are singletons: a second process
waits as a standby instead of doing the work twice, and takes over when the
holder is gone. On virtual time, with the real services on in-memory ports."""

from __future__ import annotations

import asyncio

from tablesync.runtime.lease import VALID_SHARE
from tests.capturing import CUSTOMERS, deployment, on_virtual_time
from tests.leases import Cuttable


def test_two_captures_of_one_side_publish_each_change_once() -> None:
    async def body() -> None:
        d = await deployment()
        stop = asyncio.Event()
        first, second = d.capture(d.lease()), d.capture(d.lease())
        tasks = [asyncio.ensure_future(c.run(stop)) for c in (first, second)]
        await d.until(lambda: ("bc", CUSTOMERS) in d.database.t.checkpoints, within_s=30)
        rows = [d.side.user_create(CUSTOMERS, {"displayName": f"Customer {n}"}) for n in range(3)]
        await d.until(lambda: all(d.events_of(r.id) for r in rows), within_s=30)
        # Many polls later, still once each.
        await asyncio.sleep(20 * d.settings.sync.poll_interval_s)
        stop.set()
        await asyncio.gather(*tasks)

        assert [len(d.events_of(r.id)) for r in rows] == [1, 1, 1]
        assert sorted([first.lease.holds, second.lease.holds]) == [0, 1]

    on_virtual_time(body)


def test_a_standby_capture_takes_over_from_one_cut_off_within_the_bound() -> None:
    async def body() -> None:
        d = await deployment()
        ttl, renew = d.settings.sync.lease_ttl_s, d.settings.sync.lease_renew_s
        stop = asyncio.Event()
        cut = Cuttable(d.lease())
        holder = d.capture(cut)
        tasks = [asyncio.ensure_future(holder.run(stop))]
        await d.until(lambda: holder.lease.held, within_s=5)
        standby = d.capture(d.lease())
        tasks.append(asyncio.ensure_future(standby.run(stop)))
        before = d.side.user_create(CUSTOMERS, {"displayName": "Before"})
        await d.until(lambda: bool(d.events_of(before.id)), within_s=30)

        cut.cut = True
        last_renewal = cut.renewed[-1]
        stopped = await d.until(lambda: not holder.lease.held, within_s=ttl)
        took_over = await d.until(lambda: standby.lease.held, within_s=ttl + renew)
        after = d.side.user_create(CUSTOMERS, {"displayName": "After"})
        await d.until(lambda: bool(d.events_of(after.id)), within_s=30)
        stop.set()
        await asyncio.gather(*tasks)

        assert stopped <= last_renewal + VALID_SHARE * ttl + 0.05
        assert took_over <= last_renewal + ttl + renew + 0.05
        assert stopped < took_over
        # (The new holder reads again from the stored checkpoint, its overlap
        # included, as a restarted capture does: ``before`` may come twice.)
        assert len(d.events_of(after.id)) == 1

    on_virtual_time(body)
