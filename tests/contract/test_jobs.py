"""The ``Jobs`` port: what every implementation must do."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tablesync.core.effects import ErrorRow
from tablesync.core.stored import COORDINATOR_LEASE, KEEP_ANSWER, KEEP_QUESTION, JobParams
from tablesync.errors import CommandRefused
from tablesync.ports.state import Pruned
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

    async def test_runs_no_coordinator_worked_on_for_the_bound_are_released(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        # Seconds of the database's clock; the margins are a whole TTL wide so a
        # slow statement never lands on the other side of a bound.
        ttl, after = 1.0, 2.0
        coordinator = state.holder(COORDINATOR_LEASE, ttl_s=ttl)
        ended, full, modified = new_id(), new_id(), new_id()
        await jobs.request_run(ended, "modified", [], {}, "alice")
        await jobs.finish_run(ended, "finished", "5 mappings")
        await jobs.request_run(full, "full", [], {}, "alice")
        await jobs.start_run(full)
        await jobs.request_run(modified, "modified", [], {}, "alice")
        # No coordinator ever held the lease, but the runs were just requested.
        assert await jobs.release_stale_runs(COORDINATOR_LEASE, after, "released") == []
        assert await coordinator.try_hold() is not None
        await state.elapse(after)
        # Its hold ended less than the bound ago: it may still come back.
        assert await jobs.release_stale_runs(COORDINATOR_LEASE, after, "released") == []
        assert await _status(state, full) == "running"
        await state.elapse(ttl + 0.1)
        released = await jobs.release_stale_runs(COORDINATOR_LEASE, after, "released")
        assert released == sorted([full, modified])
        for run_id in released:
            run = await jobs.run(run_id)
            assert run is not None
            assert (run.status, run.message) == ("cancelled", "released")
            assert run.finished_at is not None
        assert await _status(state, ended) == "finished"
        # Released, they block no full synchronization; while a coordinator
        # holds the lease no run is released, however old.
        again = new_id()
        await jobs.request_run(again, "full", [], {}, "bob")
        await state.elapse(after + 0.1)
        assert await coordinator.try_hold() is not None
        assert await jobs.release_stale_runs(COORDINATOR_LEASE, after, "released") == []
        assert await _status(state, again) == "requested"

    async def test_a_running_run_asks_and_takes_one_answer(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        options = {"ask": True, "unconditional": False}
        await jobs.request_run(run_id, "full", ["CUSTOMER"], options, "alice")
        # Requested, not running: nothing is asked yet and nothing is answered.
        assert await jobs.ask_run(run_id, KEEP_QUESTION) is False
        assert await jobs.answer_run(run_id, True) is False
        await jobs.start_run(run_id)
        assert await jobs.answer_run(run_id, True) is False  # asks nothing yet
        unasked = await jobs.run(run_id)
        assert unasked is not None and unasked.options == options and unasked.question is None

        assert await jobs.ask_run(run_id, KEEP_QUESTION) is True
        asked = await jobs.run(run_id)
        assert asked is not None and asked.question == KEEP_QUESTION
        assert asked.options["ask"] is True and asked.options["asked_at"]
        assert KEEP_ANSWER not in asked.options

        assert await jobs.answer_run(run_id, True) is True
        answered = await jobs.run(run_id)
        assert answered is not None and answered.status == "running"
        assert answered.options[KEEP_ANSWER] is True and answered.options["answered_at"]
        assert answered.question is None
        # The first answer stands; asking again (a restarted coordinator) keeps it.
        assert await jobs.answer_run(run_id, False) is False
        assert await jobs.ask_run(run_id, KEEP_QUESTION) is True
        again = await jobs.run(run_id)
        assert again is not None and again.options[KEEP_ANSWER] is True
        assert again.question is None

        await jobs.finish_run(run_id, "finished", "kept")
        assert await jobs.ask_run(run_id, KEEP_QUESTION) is False
        assert await jobs.answer_run(run_id, False) is False
        assert await jobs.answer_run(new_id(), True) is False
        assert await jobs.ask_run(new_id(), KEEP_QUESTION) is False

    async def test_an_answer_to_restore_is_stored_as_false(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        await jobs.request_run(run_id, "full", [], {"ask": True}, "alice")
        await jobs.start_run(run_id)
        assert await jobs.ask_run(run_id, KEEP_QUESTION) is True
        assert await jobs.answer_run(run_id, False) is True
        run = await jobs.run(run_id)
        assert run is not None and run.options[KEEP_ANSWER] is False
        assert await jobs.answer_run(run_id, True) is False

    async def test_a_cancelled_run_asks_nothing(self, state: StateHarness) -> None:
        jobs = state.stores.jobs
        run_id = new_id()
        await jobs.request_run(run_id, "full", [], {"ask": True}, "alice")
        await jobs.start_run(run_id)
        assert await jobs.ask_run(run_id, KEEP_QUESTION) is True
        assert await jobs.cancel_run(run_id, "cancelled by bob") is True
        run = await jobs.run(run_id)
        assert run is not None and run.question is None
        assert await jobs.answer_run(run_id, True) is False

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

    async def test_a_job_and_a_run_say_which_bc_company_they_are_of(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        scoped, every = new_id(), new_id()
        await jobs.request_run(scoped, "full", ["CUSTOMER"], {}, "alice", company="canada")
        await jobs.request_run(every, "modified", ["CUSTOMER"], {}, "alice")
        assert {(r.run_id, r.company) for r in await jobs.runs()} == {
            (scoped, "canada"),
            (every, None),
        }
        usa, canada, single = new_id(), new_id(), new_id()
        for job_id, company in ((usa, "usa"), (canada, "canada")):
            await jobs.create_job(
                job_id,
                run_id=every,
                mapping="CUSTOMER",
                direction="to_integration",
                kind="modified",
                company=company,
            )
        await jobs.create_job(
            single, run_id=every, mapping="CUSTOMER", direction="to_integration", kind="modified"
        )

        params = {j: await jobs.job_params(j) for j in (usa, canada, single)}
        assert {j: p.company if p else None for j, p in params.items()} == {
            usa: "usa",
            canada: "canada",
            single: "",
        }
        totals = await jobs.totals(canada)
        assert totals is not None and totals.company == "canada"
        assert totals.as_dict()["company"] == "canada"
        plain = await jobs.totals(single)
        assert plain is not None and "company" not in plain.as_dict()
        assert [j.job_id for j in await jobs.listing(company="usa")] == [usa]
        assert {j.job_id for j in await jobs.listing(run_id=every)} == {usa, canada, single}

    async def test_each_company_has_its_own_continuous_job_of_an_interval(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs
        start = await state.now() - timedelta(minutes=5)
        usa, canada, again = new_id(), new_id(), new_id()
        await jobs.continuous_job(usa, "CUSTOMER", "to_integration", start, company="usa")
        await jobs.continuous_job(canada, "CUSTOMER", "to_integration", start, company="canada")
        await jobs.continuous_job(again, "CUSTOMER", "to_integration", start, company="canada")

        assert await jobs.job_params(again) is None
        found = [await jobs.job_params(j) for j in (usa, canada)]
        assert [p.company if p else None for p in found] == ["usa", "canada"]

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
            "unmatched",
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

    # Retention

    async def test_prune_deletes_jobs_ended_before_the_cutoff_with_their_rows(
        self, state: StateHarness
    ) -> None:
        jobs, apply_state = state.stores.jobs, state.stores.apply_state
        now = await state.now()
        days = timedelta(days=1)

        async def interval(mapping: str, start: timedelta, failures: int) -> str:
            job_id = new_id()
            await jobs.continuous_job(job_id, mapping, "to_integration", now - start)
            rows = [
                ErrorRow(job_id, mapping, "to_integration", "bc", f"{job_id}-{n}", None, "no")
                for n in range(failures)
            ]
            e = effects(mapping, errors=rows)
            e.count(job_id, "t", 0, "inserted")
            e.count(job_id, "t", 1, *(["failed"] * failures))
            await apply_state.commit(e)
            return job_id

        # Closed 50 days after they began: ended 50 and 10 days ago; the third still runs.
        old = await interval("CUSTOMER", 100 * days, 3)
        recent = await interval("CUSTOMER", 60 * days, 1)
        running = await interval("CUSTOMER", 30 * days, 1)
        # More old rows than one batch holds, so every statement runs more than once.
        older = [await interval("VENDOR", 100 * days + n * timedelta(hours=1), 2) for n in range(4)]
        assert await jobs.close_continuous_jobs(50 * days) == 6
        full = new_id()
        await jobs.create_job(
            full, run_id=None, mapping="CUSTOMER", direction="to_integration", kind="full"
        )
        await jobs.finish_job(full, "failed", "broker away")

        pruned = await jobs.prune(now - 20 * days, batch=2)
        assert pruned == Pruned(jobs=5, errors=3 + 4 * 2, runs=0)
        for gone in (old, *older):
            assert await jobs.totals(gone) is None
            assert await jobs.errors(job_id=gone) == []
            assert await jobs.partition_counts(gone, "t", 0) == {}
        for kept in (recent, running, full):
            assert await jobs.totals(kept) is not None
        assert [e.source_id for e in await jobs.errors()] == [f"{running}-0", f"{recent}-0"]
        kept_running = await jobs.totals(running)
        assert kept_running is not None and kept_running.status == "running"
        assert kept_running.counts["failed"] == 1
        assert await jobs.prune(now - 20 * days, batch=2) == Pruned()
        # The interval of a pruned continuous job is free again.
        again = new_id()
        await jobs.continuous_job(again, "CUSTOMER", "to_integration", now - 100 * days)
        assert await jobs.job_params(again) is not None

    async def test_prune_never_deletes_a_running_job_nor_the_jobs_of_an_open_run(
        self, state: StateHarness
    ) -> None:
        jobs = state.stores.jobs

        async def job(run_id: str | None) -> str:
            job_id = new_id()
            await jobs.create_job(
                job_id, run_id=run_id, mapping="CUSTOMER", direction="to_integration", kind="full"
            )
            return job_id

        done_run, open_run, waiting_run = new_id(), new_id(), new_id()
        await jobs.request_run(done_run, "modified", [], {}, "alice")
        await jobs.start_run(done_run)
        done_job = await job(done_run)
        await jobs.finish_job(done_job)
        await jobs.finish_run(done_run, "finished")
        await jobs.request_run(open_run, "full", [], {}, "alice")
        await jobs.start_run(open_run)
        open_job = await job(open_run)
        await jobs.finish_job(open_job)
        await jobs.request_run(waiting_run, "modified", [], {}, "alice")
        running, pending = await job(None), new_id()
        await jobs.create_job(
            pending,
            run_id=None,
            mapping="VENDOR",
            direction="to_integration",
            kind="full",
            status="pending",
        )
        await state.elapse()
        cutoff = await state.now()
        await state.elapse()
        late_run = new_id()
        await jobs.request_run(late_run, "modified", [], {}, "bob")
        await jobs.finish_run(late_run, "failed", "refused")

        assert await jobs.prune(cutoff) == Pruned(jobs=1, errors=0, runs=1)
        assert await jobs.run(done_run) is None and await jobs.totals(done_job) is None
        for kept in (open_job, running, pending):
            assert await jobs.totals(kept) is not None
        for run in (open_run, waiting_run, late_run):
            assert await jobs.run(run) is not None

        # Once its run ends, a job that ended before the cutoff goes; the run
        # itself, ended after it, goes with a later cutoff.
        await jobs.finish_run(open_run, "finished")
        assert await jobs.prune(cutoff) == Pruned(jobs=1, errors=0, runs=0)
        assert await jobs.totals(open_job) is None
        await state.elapse()
        later = await state.now()
        assert await jobs.prune(later) == Pruned(jobs=0, errors=0, runs=2)
        assert {r.run_id for r in await jobs.runs()} == {waiting_run}
        assert await jobs.totals(running) is not None and await jobs.totals(pending) is not None


class TestMemoryJobs(JobsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresJobs(JobsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state


async def _status(state: StateHarness, run_id: str) -> str:
    run = await state.stores.jobs.run(run_id)
    assert run is not None
    return run.status
