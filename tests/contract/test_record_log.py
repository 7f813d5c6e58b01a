"""The record log, as the state ports keep it: written only with a batch's
counters by ``ApplyState.commit``, read by ``Jobs.record_log``, pruned with
its jobs by ``Jobs.prune``. What every implementation must do."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta

import pytest

from tablesync.core.effects import Decided, LogEntry
from tablesync.core.events import Side
from tablesync.ports.state import Pruned
from tests.contract.state_fixtures import (
    StateHarness,
    continuous_job,
    coupling,
    effects,
    memory_state_fixture,  # noqa: F401
    new_id,
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)


def about(source_id: str, at: datetime, **words: object) -> Decided:
    return Decided("bc", source_id, at, **words)  # type: ignore[arg-type]


class RecordLogContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_a_commit_logs_each_counted_decision_as_it_counts(
        self, state: StateHarness
    ) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        bc, dv, other = new_id(), new_id(), new_id()
        t0 = await state.now()
        e = effects()
        e.count(
            job_id,
            "t",
            0,
            "inserted",
            about=about(
                bc,
                t0,
                counterpart_id=dv,
                company="CRONUS",
                direction="to_integration",
                fields=("name", "telephone1"),
            ),
        )
        e.count(job_id, "t", 0, "unchanged", about=about(other, t0 + timedelta(seconds=1)))
        # The counterpart's own decision, later: it names the BC record.
        e.count(
            job_id,
            "t",
            1,
            "modified",
            about=Decided(
                "dataverse",
                dv,
                t0 + timedelta(seconds=2),
                bc,
                "CRONUS",
                "from_integration",
                ("displayName",),
            ),
        )
        # Counted without words (a bare counter): nothing logged for it.
        e.count(job_id, "t", 0, "unchanged")
        await stores.apply_state.commit(e)

        history = await stores.jobs.record_log("CUSTOMER", "bc", bc)
        assert [(h.source_side, h.decision, h.direction, h.fields) for h in history] == [
            ("dataverse", ("modified",), "from_integration", ("displayName",)),
            ("bc", ("inserted",), "to_integration", ("name", "telephone1")),
        ]
        first = history[1]
        assert first == LogEntry(
            mapping="CUSTOMER",
            company="CRONUS",
            source_side="bc",
            source_id=bc,
            counterpart_id=dv,
            job_id=job_id,
            decision=("inserted",),
            direction="to_integration",
            fields=("name", "telephone1"),
            message="",
            at=t0,
        )
        # Asked by the Dataverse id, the same history; by an upper-case id too.
        assert await stores.jobs.record_log("CUSTOMER", "dataverse", dv) == history
        assert await stores.jobs.record_log("CUSTOMER", "bc", bc.upper()) == history
        assert await stores.jobs.record_log("CUSTOMER", "bc", bc, limit=1) == history[:1]
        assert await stores.jobs.record_log("VENDOR", "bc", bc) == []
        assert await stores.jobs.record_log("CUSTOMER", "dataverse", bc) == []
        assert [h.decision for h in await stores.jobs.record_log("CUSTOMER", "bc", other)] == [
            ("unchanged",)
        ]

    async def test_the_log_agrees_with_the_counters_it_was_counted_with(
        self, state: StateHarness
    ) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        at = await state.now()
        bc = new_id()
        e = effects()
        names = [("modified", "coupled"), ("unchanged",), ("failed",), ("modified",)]
        for n, counted in enumerate(names):
            e.count(job_id, "t", n % 2, *counted, about=about(bc, at + timedelta(seconds=n)))
        await stores.apply_state.commit(e)
        history = await stores.jobs.record_log("CUSTOMER", "bc", bc)
        assert [h.decision for h in history] == names[::-1]
        totals = await stores.jobs.totals(job_id)
        assert totals is not None
        logged = Counter(name for h in history for name in h.decision)
        assert {k: v for k, v in totals.counts.items() if v} == dict(logged)

    async def test_decisions_at_one_moment_read_the_last_written_first(
        self, state: StateHarness
    ) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        at = await state.now()
        bc = new_id()
        for counted in ("pending", "inserted"):
            e = effects()
            e.count(job_id, "t", 0, counted, about=about(bc, at))
            await stores.apply_state.commit(e)
        history = await stores.jobs.record_log("CUSTOMER", "bc", bc)
        assert [h.decision for h in history] == [("inserted",), ("pending",)]

    async def test_a_removal_is_logged_only_by_the_commit_that_removes_the_coupling(
        self, state: StateHarness
    ) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        c = coupling()
        await stores.couplings.couple(c, "to_integration")
        at = await state.now()
        attempts = []
        sides: tuple[tuple[int, Side, Side], ...] = ((0, "bc", "dataverse"), (1, "dataverse", "bc"))
        for partition, side, other in sides:
            e = effects(uncoupled=[c])
            words = Decided(side, c.id_on(side), at, c.id_on(other))
            e.count_if_uncoupled(c, job_id, "t", partition, "deleted", "uncoupled", about=words)
            attempts.append(e)
        await asyncio.gather(*(stores.apply_state.commit(e) for e in attempts))
        history = await stores.jobs.record_log("CUSTOMER", "bc", c.bc_id)
        assert [h.decision for h in history] == [("deleted", "uncoupled")]
        # The commit's own effects say what it counted, log included.
        assert sum(len(e.log) for e in attempts) == 1

    async def test_a_refused_commit_logs_nothing(self, state: StateHarness) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        bc = new_id()
        e = effects()
        e.count(job_id, "t", 0, "inserted", about=about(bc, await state.now()))
        e.count(new_id(), "t", 0, "inserted")  # a job that does not exist
        with pytest.raises(state.integrity_error):
            await stores.apply_state.commit(e)
        assert await stores.jobs.record_log("CUSTOMER", "bc", bc) == []
        # Logged in a job that does not exist: refused as its counters are.
        orphan = effects()
        orphan.log.append(about(bc, await state.now()).entry("CUSTOMER", new_id(), ["inserted"]))
        with pytest.raises(state.integrity_error):
            await stores.apply_state.commit(orphan)
        # A decision outside the counters' words is refused.
        odd = effects()
        odd.log.append(about(bc, await state.now()).entry("CUSTOMER", job_id, ["synced"]))
        with pytest.raises(state.integrity_error):
            await stores.apply_state.commit(odd)
        assert await stores.jobs.record_log("CUSTOMER", "bc", bc) == []

    async def test_a_large_batch_is_logged_whole(self, state: StateHarness) -> None:
        stores = state.stores
        job_id = await continuous_job(state)
        at = await state.now()
        ids = [new_id() for _ in range(3000)]
        e = effects()
        for n, bc in enumerate(ids):
            fields = ("name",) if n % 2 else ()
            e.count(job_id, "t", n % 3, "inserted", about=about(bc, at, fields=fields, message="m"))
        await stores.apply_state.commit(e)
        for n in (0, 1, 2999):
            [h] = await stores.jobs.record_log("CUSTOMER", "bc", ids[n])
            assert (h.decision, h.fields, h.message) == (
                ("inserted",),
                ("name",) if n % 2 else (),
                "m",
            )
        totals = await stores.jobs.totals(job_id)
        assert totals is not None and totals.counts["inserted"] == 3000

    async def test_prune_takes_the_log_rows_with_their_jobs(self, state: StateHarness) -> None:
        jobs, apply_state = state.stores.jobs, state.stores.apply_state
        now = await state.now()
        days = timedelta(days=1)
        bc = new_id()

        async def interval(start: timedelta, decisions: int) -> str:
            job_id = new_id()
            await jobs.continuous_job(job_id, "CUSTOMER", "to_integration", now - start)
            e = effects()
            for n in range(decisions):
                at = now - start + n * timedelta(minutes=1)
                e.count(job_id, "t", 0, "modified", about=about(bc, at))
            await apply_state.commit(e)
            return job_id

        old = await interval(100 * days, 5)
        recent = await interval(60 * days, 2)
        running = await interval(30 * days, 1)
        assert await jobs.close_continuous_jobs(50 * days) == 2
        # More rows than one batch holds: every statement runs more than once.
        assert await jobs.prune(now - 20 * days, batch=2) == Pruned(jobs=1, record_log=5)
        history = await jobs.record_log("CUSTOMER", "bc", bc)
        assert [h.job_id for h in history] == [running, recent, recent]
        assert old not in {h.job_id for h in history}
        assert await jobs.prune(now - 20 * days, batch=2) == Pruned()


class TestMemoryRecordLog(RecordLogContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresRecordLog(RecordLogContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
