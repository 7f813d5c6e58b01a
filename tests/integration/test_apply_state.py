"""The apply state store on a real PostgreSQL: what one commit may count."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

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
