"""The apply state store on a real PostgreSQL: what one commit may count."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tablesync.adapters.postgres.apply_state import ApplyStateStore, BatchEffects
from tablesync.adapters.postgres.couplings import write_couplings
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.core.couplings import Coupling, Stamp

pytestmark = pytest.mark.integration


async def test_two_attempts_removing_one_coupling_count_its_deletion_once(state_dsn: str) -> None:
    # The two records of a coupling sit on different partitions, so two batches
    # can both decide to remove it; only the commit that removes it counts.
    pool = await create_pool(state_dsn, max_size=4)
    try:
        now = datetime.now(UTC)
        job_id = str(uuid.uuid4())
        await JobStore(pool).continuous_job(job_id, "CUSTOMER", "to_integration", now)
        stamp = Stamp(now, 'W/"1"')
        coupling = Coupling("CUSTOMER", str(uuid.uuid4()), str(uuid.uuid4()), "10000", stamp, stamp)
        async with pool.acquire() as conn:
            await write_couplings(conn, [coupling], "to_integration")
        store = ApplyStateStore(pool)
        attempts = []
        for partition in (0, 1):
            effects = BatchEffects("CUSTOMER")
            effects.uncoupled.append(coupling)
            effects.count_if_uncoupled(coupling, job_id, "t", partition, "deleted", "uncoupled")
            attempts.append(effects)
        await asyncio.gather(*(store.commit(e) for e in attempts))
        rows = await pool.fetch(
            "SELECT sum(deleted) AS deleted, sum(uncoupled) AS uncoupled "
            "FROM job_partitions WHERE job_id = $1",
            uuid.UUID(job_id),
        )
        assert (rows[0]["deleted"], rows[0]["uncoupled"]) == (1, 1)
        assert not await pool.fetch("SELECT * FROM couplings")
    finally:
        await pool.close()


async def test_a_batchs_last_decision_about_a_coupling_is_the_one_kept(state_dsn: str) -> None:
    # One batch decides about a pair more than once (its two records' events,
    # a later chunk): the last decision's stamps stand, with the direction of
    # its last write, whatever directions the decisions had.
    pool = await create_pool(state_dsn, max_size=2)
    try:
        t0 = datetime.now(UTC)
        bc_id, dv_id, dv_new = (str(uuid.uuid4()) for _ in range(3))
        older, newer = Stamp(t0, 'W/"1"'), Stamp(t0 + timedelta(seconds=5), 'W/"2"')
        first = Coupling("CUSTOMER", bc_id, dv_id, "10000", older, older)
        effects = BatchEffects("CUSTOMER")
        effects.couplings.append((first, "to_integration"))
        effects.couplings.append((first.with_stamp("bc", newer), None))
        # A Dataverse row coupled anew in the same batch replaces its old pair.
        other_bc = str(uuid.uuid4())
        replaced = Coupling("CUSTOMER", other_bc, dv_new, "20000", older, older)
        effects.couplings.append((replaced, None))
        effects.couplings.append(
            (Coupling("CUSTOMER", bc_id, dv_new, "10000", newer, newer), "from_integration")
        )
        await ApplyStateStore(pool).commit(effects)
        rows = await pool.fetch(
            "SELECT bc_id::text AS bc, dv_id::text AS dv, bc_etag, last_direction FROM couplings"
        )
        assert [dict(r) for r in rows] == [
            {"bc": bc_id, "dv": dv_new, "bc_etag": 'W/"2"', "last_direction": "from_integration"}
        ]

        effects = BatchEffects("CUSTOMER")
        stored = Coupling("CUSTOMER", bc_id, dv_new, "10000", newer, newer)
        effects.couplings.append((stored.with_stamp("bc", older), "to_integration"))
        effects.couplings.append((stored, None))
        await ApplyStateStore(pool).commit(effects)
        row = await pool.fetchrow("SELECT bc_etag, last_direction FROM couplings")
        assert (row["bc_etag"], row["last_direction"]) == ('W/"2"', "to_integration")
    finally:
        await pool.close()
