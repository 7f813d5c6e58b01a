"""The ``Jobs`` port: what every implementation must do."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tablesync.core.effects import ErrorRow
from tablesync.core.stored import JobParams
from tablesync.errors import CommandRefused
from tests.contract.state_fixtures import (
    StateHarness,
    continuous_job,
    effects,
    memory_state_fixture,  # noqa: F401
    new_id,
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)


class JobsContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    # Runs

    async def test_a_run_goes_from_requested_to_running_to_finished(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        options = {"restore_only_coupled": True, "by": {"who": "ops"}}
        await jobs.request_run(run_id, "full", ["CURRENCY", "CUSTOMER"], options, "alice")
        run = await jobs.run(run_id)
        assert run is not None
        assert (run.run_id, run.kind, run.status, run.mappings, run.options, run.requested_by) == (
            run_id,
            "full",
            "requested",
            ["CURRENCY", "CUSTOMER"],
            options,
            "alice",
        )
        assert (run.started_at, run.finished_at, run.message) == (None, None, "")
        run.options["by"]["who"] = "changed"

        await state.elapse()
        await jobs.start_run(run_id)
        started = await jobs.run(run_id)
        assert started is not None and started.status == "running"
        assert started.options == options
        assert started.started_at is not None and started.started_at > run.requested_at
        await state.elapse()
        await jobs.start_run(run_id)
        again = await jobs.run(run_id)
        assert again is not None and again.started_at == started.started_at

        await jobs.finish_run(run_id, "finished", "2 mappings")
        done = await jobs.run(run_id)
        assert done is not None
        assert (done.status, done.message) == ("finished", "2 mappings")
        assert done.finished_at is not None and done.finished_at > started.started_at
        await jobs.start_run(run_id)  # a finished run is not started again
        assert await jobs.run(run_id) == done
        assert await jobs.run(new_id()) is None

    async def test_a_second_full_synchronization_is_refused_while_one_is_open(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        first = new_id()
        await jobs.request_run(first, "full", [], {}, "alice")
        with pytest.raises(CommandRefused, match=first):
            await jobs.request_run(new_id(), "full", [], {}, "bob")
        await jobs.start_run(first)
        with pytest.raises(CommandRefused, match=first):
            await jobs.request_run(new_id(), "full", [], {}, "bob")
        await jobs.request_run(new_id(), "modified", [], {}, "bob")
        await jobs.request_run(new_id(), "modified", [], {}, "bob")

        await jobs.finish_run(first, "failed", "broker away")
        await jobs.request_run(new_id(), "full", [], {}, "bob")

    async def test_a_cancelled_run_stays_cancelled_and_frees_the_full_sync(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        await jobs.request_run(run_id, "full", [], {}, "alice")
        await jobs.start_run(run_id)
        await state.elapse()
        assert await jobs.cancel_run(run_id, "cancelled by bob") is True
        cancelled = await jobs.run(run_id)
        assert cancelled is not None
        assert (cancelled.status, cancelled.message) == ("cancelled", "cancelled by bob")
        assert cancelled.finished_at is not None
        # Its coordinator finishing the step it was on does not undo it.
        await jobs.finish_run(run_id, "finished", "3 mappings")
        await jobs.start_run(run_id)
        assert await jobs.run(run_id) == cancelled
        assert await jobs.cancel_run(run_id, "again") is False
        assert await jobs.cancel_run(new_id(), "no such run") is False
        await jobs.request_run(new_id(), "full", [], {}, "bob")

    async def test_a_requested_run_can_be_cancelled_before_it_starts(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        await jobs.request_run(run_id, "modified", [], {}, "alice")
        assert await jobs.cancel_run(run_id, "not wanted") is True
        await jobs.start_run(run_id)
        run = await jobs.run(run_id)
        assert run is not None and run.status == "cancelled" and run.started_at is None

    async def test_a_finished_run_is_not_finished_again(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        await jobs.request_run(run_id, "full", [], {}, "alice")
        await jobs.finish_run(run_id, "failed", "mapping vanished")
        await jobs.finish_run(run_id, "finished", "")
        run = await jobs.run(run_id)
        assert run is not None and (run.status, run.message) == ("failed", "mapping vanished")

    async def test_runs_are_listed_newest_first(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        ids = []
        for _ in range(3):
            ids.append(new_id())
            await jobs.request_run(ids[-1], "modified", [], {}, "alice")
            await state.elapse()
        assert [r.run_id for r in await jobs.runs()] == ids[::-1]
        assert [r.run_id for r in await jobs.runs(limit=2)] == ids[:0:-1]

    # Jobs

    async def test_a_second_create_of_a_job_changes_nothing(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id, job_id = new_id(), new_id()
        await jobs.request_run(run_id, "full", ["CUSTOMER"], {}, "alice")
        await jobs.create_job(
            job_id,
            run_id=run_id,
            mapping="CUSTOMER",
            direction="from_integration",
            kind="full",
            ignore_only_coupled=True,
            source_topic="cdc.dataverse.accounts",
            partitions=3,
        )
        await jobs.create_job(
            job_id, run_id=None, mapping="VENDOR", direction="to_integration", kind="modified"
        )
        assert await jobs.job_params(job_id) == JobParams(
            job_id, "CUSTOMER", "from_integration", "full", True, "running"
        )
        totals = await jobs.totals(job_id)
        assert totals is not None
        assert (totals.run_id, totals.type, totals.partitions, totals.partitions_finished) == (
            run_id,
            "synchronization",
            3,
            0,
        )
        assert set(totals.counts.values()) == {0}
        assert await jobs.job_params(new_id()) is None
        assert await jobs.totals(new_id()) is None

    async def test_a_job_keeps_whether_it_is_unconditional(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id, plain, unconditional = new_id(), new_id(), new_id()
        await jobs.request_run(run_id, "full", ["CUSTOMER"], {"unconditional": True}, "alice")
        for job_id, flag in ((plain, False), (unconditional, True)):
            await jobs.create_job(
                job_id,
                run_id=run_id,
                mapping="CUSTOMER",
                direction="to_integration",
                kind="full",
                ignore_only_coupled=True,
                unconditional=flag,
            )
        params = [await jobs.job_params(j) for j in (plain, unconditional)]
        assert [p.unconditional if p else None for p in params] == [False, True]

    async def test_a_job_of_a_run_that_does_not_exist_is_refused(self, state: StateHarness) -> None:
        with pytest.raises(state.integrity_error):
            await state.stores.jobs.create_job(
                new_id(), run_id=new_id(), mapping="CUSTOMER", direction="to_integration", kind="x"
            )

    async def test_one_continuous_job_per_mapping_direction_and_interval(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        start = await state.now() - timedelta(minutes=5)
        first, second = new_id(), new_id()
        await jobs.continuous_job(first, "CUSTOMER", "to_integration", start)
        await jobs.continuous_job(second, "CUSTOMER", "to_integration", start)
        await jobs.continuous_job(first, "CUSTOMER", "from_integration", start)
        assert await jobs.job_params(second) is None
        totals = await jobs.totals(first)
        assert totals is not None
        assert (totals.kind, totals.direction, totals.status, totals.started_at) == (
            "continuous",
            "to_integration",
            "running",
            start,
        )
        await jobs.continuous_job(second, "CUSTOMER", "from_integration", start)
        assert await jobs.job_params(second) is not None

    async def test_listing_filters_orders_and_hides_empty_continuous_jobs(
        self, state: StateHarness
    ) -> None:
        jobs, apply_state = state.stores.jobs, state.stores.apply_state
        run_id = new_id()
        await jobs.request_run(run_id, "full", [], {}, "alice")
        quiet = await continuous_job(state)
        busy = await continuous_job(state, "VENDOR")
        e = effects("VENDOR")
        e.count(busy, "t", 0, "modified")
        await apply_state.commit(e)
        await state.elapse()
        made = []
        for mapping in ("VENDOR", "CUSTOMER"):
            made.append(new_id())
            await jobs.create_job(
                made[-1], run_id=run_id, mapping=mapping, direction="to_integration", kind="full"
            )
            await state.elapse()

        assert [j.job_id for j in await jobs.listing()] == [made[1], made[0], busy]
        listed = await jobs.listing(include_empty_continuous=True)
        assert sorted(j.job_id for j in listed[2:]) == sorted([busy, quiet])
        assert [j.job_id for j in await jobs.listing(run_id=run_id)] == made[::-1]
        assert [j.job_id for j in await jobs.listing(mapping="VENDOR")] == [made[0], busy]
        assert [j.job_id for j in await jobs.listing(limit=1)] == [made[1]]
        [vendor] = await jobs.listing(mapping="VENDOR", run_id=run_id)
        assert vendor.counts["modified"] == 0
        [continuous] = [j for j in listed if j.job_id == busy]
        assert continuous.counts["modified"] == 1

    async def test_a_job_finishes_once_and_keeps_its_message_unless_given_one(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        job_id = new_id()
        await jobs.create_job(
            job_id, run_id=None, mapping="CUSTOMER", direction="to_integration", kind="full"
        )
        await jobs.finish_job(job_id, message="3 records")
        first = await jobs.totals(job_id)
        assert first is not None and first.finished_at is not None
        assert (first.status, first.message) == ("finished", "3 records")
        await state.elapse()
        await jobs.finish_job(job_id, "failed")
        again = await jobs.totals(job_id)
        assert again is not None
        assert (again.status, again.message, again.finished_at) == (
            "failed",
            "3 records",
            first.finished_at,
        )

    async def test_continuous_jobs_close_when_their_interval_is_over(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        now = await state.now()
        over, current = new_id(), new_id()
        await jobs.continuous_job(over, "CUSTOMER", "to_integration", now - timedelta(minutes=20))
        await jobs.continuous_job(current, "CUSTOMER", "to_integration", now - timedelta(minutes=5))
        await jobs.create_job(
            new_id(), run_id=None, mapping="CUSTOMER", direction="to_integration", kind="full"
        )
        assert await jobs.close_continuous_jobs(timedelta(minutes=15)) == 1
        assert await jobs.close_continuous_jobs(timedelta(minutes=15)) == 0
        closed = await jobs.totals(over)
        assert closed is not None
        assert (closed.status, closed.finished_at) == ("finished", now - timedelta(minutes=5))
        still = await jobs.totals(current)
        assert still is not None and (still.status, still.finished_at) == ("running", None)

    async def test_partition_counts_are_one_partitions_own(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        job_id = await continuous_job(state)
        for partition, name in ((0, "inserted"), (1, "deleted"), (1, "deleted")):
            e = effects()
            e.count(job_id, "t", partition, name)
            await state.stores.apply_state.commit(e)
        one = await jobs.partition_counts(job_id, "t", 1)
        assert {k: v for k, v in one.items() if v} == {"deleted": 2}
        assert set(one) == {
            "inserted",
            "modified",
            "deleted",
            "unchanged",
            "skipped",
            "failed",
            "pending",
            "coupled",
            "uncoupled",
        }
        assert await jobs.partition_counts(job_id, "t", 2) == {}
        assert await jobs.partition_counts(job_id, "u", 0) == {}
        totals = await jobs.totals(job_id)
        assert totals is not None
        assert (totals.counts["inserted"], totals.counts["deleted"]) == (1, 2)

    async def test_errors_are_listed_newest_first_by_job_or_mapping(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        customer, vendor = await continuous_job(state), await continuous_job(state, "VENDOR")
        for job_id, mapping, source in (
            (customer, "CUSTOMER", "a"),
            (vendor, "VENDOR", "b"),
            (customer, "CUSTOMER", "c"),
        ):
            row = ErrorRow(job_id, mapping, "to_integration", "bc", source, None, "refused")
            await state.stores.apply_state.commit(effects(mapping, errors=[row]))
        assert [e.source_id for e in await jobs.errors()] == ["c", "b", "a"]
        assert [e.source_id for e in await jobs.errors(job_id=customer)] == ["c", "a"]
        assert [e.source_id for e in await jobs.errors(mapping="VENDOR")] == ["b"]
        assert [e.source_id for e in await jobs.errors(limit=1)] == ["c"]
        assert await jobs.errors(job_id=vendor, mapping="CUSTOMER") == []

    async def test_a_snapshot_request_is_noted_once_per_job(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        job_id = new_id()
        await jobs.create_job(
            job_id, run_id=None, mapping="CUSTOMER", direction="to_integration", kind="full"
        )
        assert not await jobs.snapshot_requested(job_id)
        await jobs.mark_snapshot_requested(job_id)
        assert await jobs.snapshot_requested(job_id)
        assert not await jobs.snapshot_requested(new_id())

    async def test_synced_until_is_kept_per_mapping_and_direction(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        now = await state.now()
        assert await jobs.synced_until("CUSTOMER", "to_integration") is None
        await jobs.set_synced_until("CUSTOMER", "to_integration", now)
        await jobs.set_synced_until("CUSTOMER", "from_integration", now - timedelta(hours=1))
        assert await jobs.synced_until("CUSTOMER", "to_integration") == now
        await jobs.set_synced_until("CUSTOMER", "to_integration", now - timedelta(days=1))
        assert await jobs.synced_until("CUSTOMER", "to_integration") == now - timedelta(days=1)
        assert await jobs.synced_until("VENDOR", "to_integration") is None


class TestMemoryJobs(JobsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresJobs(JobsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
