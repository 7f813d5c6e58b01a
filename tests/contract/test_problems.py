"""The ``Problems`` port: what every implementation must do."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tablesync.core.stored import Selection
from tests.contract.state_fixtures import (
    StateHarness,
    coupling,
    effects,
    memory_state_fixture,  # noqa: F401
    new_id,
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
    status,
)


class ProblemsContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def _three_records(self, state: StateHarness) -> None:
        apply_state = state.stores.apply_state
        await apply_state.commit(effects(statuses=[status("s1", destination_id="d1")]))
        await state.elapse()
        await apply_state.commit(
            effects("VENDOR", statuses=[status("s2", mapping="VENDOR", state="skipped")])
        )
        await state.elapse()
        await apply_state.commit(
            effects(statuses=[status("s3", side="dataverse", state="pending")])
        )

    async def test_records_are_selected_newest_failure_first(self, state: StateHarness) -> None:
        await self._three_records(state)
        problems = state.stores.problems

        async def ids(selection: Selection, limit: int = 1000) -> list[str]:
            return [r.source_id for r in await problems.records(selection, limit=limit)]

        assert await ids(Selection(everything=True)) == ["s3", "s2", "s1"]
        assert await ids(Selection(everything=True), limit=2) == ["s3", "s2"]
        assert await ids(Selection(mapping="CUSTOMER")) == ["s3", "s1"]
        assert await ids(Selection(skipped_only=True)) == ["s2"]
        assert await ids(Selection(record_ids=("S3", "D1"))) == ["s3", "s1"]
        [newest] = await problems.records(Selection(record_ids=("s3",)))
        assert await ids(Selection(since=newest.last_failed_at)) == ["s3"]

    async def test_a_record_reads_back_as_it_was_written(self, state: StateHarness) -> None:
        job_id = new_id()
        later = await state.now() + timedelta(minutes=3)
        change = status(
            "s1", destination_id="d1", job_id=job_id, next_attempt_at=later, event=b"\x00raw"
        )
        await state.stores.apply_state.commit(effects(statuses=[change]))
        [r] = await state.stores.problems.records(Selection(everything=True))
        assert (r.mapping, r.source_side, r.source_id, r.destination_id) == (
            "CUSTOMER",
            "bc",
            "s1",
            "d1",
        )
        assert (r.status, r.reason, r.message, r.attempts, r.same_failures) == (
            "failed",
            "api",
            "s1 did not sync",
            1,
            1,
        )
        assert (r.next_attempt_at, r.event) == (later, b"\x00raw")
        assert r.first_failed_at == r.last_failed_at

    async def test_a_reset_record_counts_its_next_failure_as_the_first(
        self, state: StateHarness
    ) -> None:
        await self._three_records(state)
        problems = state.stores.problems
        skipped = await problems.records(Selection(skipped_only=True))
        before = await state.now()
        await problems.reset(skipped)
        [r] = await problems.records(Selection(record_ids=("s2",)))
        assert (r.status, r.same_failures) == ("failed", 0)
        assert r.next_attempt_at is not None
        assert timedelta(minutes=59) < r.next_attempt_at - before < timedelta(minutes=61)
        assert await state.stores.apply_state.claim_due("VENDOR", 10, 60.0) == []
        [other] = await problems.records(Selection(record_ids=("s1",)))
        assert other.same_failures == 1

    async def test_couplings_are_selected_by_mapping_id_time_and_deletion(
        self, state: StateHarness
    ) -> None:
        couplings, problems = state.stores.couplings, state.stores.problems
        first, vendor = coupling(bc_key="10000"), coupling("VENDOR", bc_key="V1")
        await couplings.couple(first, None)
        await couplings.couple(vendor, None)
        await state.elapse()
        since = await state.now()
        await state.elapse()
        second = coupling(bc_key="20000")
        await couplings.couple(second, None)
        assert await problems.flag_deleted(second, "bc")

        async def ids(selection: Selection, **options: object) -> list[str]:
            found = await problems.couplings(selection, **options)  # type: ignore[arg-type]
            return [c.bc_id for c in found]

        assert await ids(Selection(everything=True)) == [first.bc_id, second.bc_id, vendor.bc_id]
        assert await ids(Selection(everything=True), limit=1) == [first.bc_id]
        assert await ids(Selection(mapping="VENDOR")) == [vendor.bc_id]
        assert await ids(Selection(record_ids=(vendor.dv_id.upper(), first.bc_id))) == [
            first.bc_id,
            vendor.bc_id,
        ]
        assert await ids(Selection(since=since)) == [second.bc_id]
        assert await ids(Selection(everything=True), deleted_only=True) == [second.bc_id]
        [flagged] = await problems.couplings(Selection(mapping="CUSTOMER"), deleted_only=True)
        assert (flagged.bc_deleted, flagged.dv_deleted) == (True, False)

    async def test_ids_that_are_no_guids_select_no_coupling(self, state: StateHarness) -> None:
        await state.stores.couplings.couple(coupling(bc_key="10000"), None)
        assert await state.stores.problems.couplings(Selection(record_ids=("10000",))) == []

    async def test_a_record_is_flagged_deleted_once_per_side(self, state: StateHarness) -> None:
        couplings, problems = state.stores.couplings, state.stores.problems
        c = coupling()
        await couplings.couple(c, "to_integration")
        [before] = await couplings.listing()
        assert await problems.flag_deleted(c, "dataverse")
        assert not await problems.flag_deleted(c, "dataverse")
        assert await problems.flag_deleted(c, "bc")
        assert not await problems.flag_deleted(coupling(), "bc")
        found = await couplings.get("CUSTOMER", "bc", c.bc_id)
        assert found is not None and (found.bc_deleted, found.dv_deleted) == (True, True)
        [after] = await couplings.listing()
        assert after.last_synced_at == before.last_synced_at

    async def test_a_coupled_record_found_gone_is_listed_as_skipped(
        self, state: StateHarness
    ) -> None:
        problems = state.stores.problems
        c = coupling()
        await problems.list_deleted(c, "dataverse", "gone", b"first")
        [r] = await problems.records(Selection(skipped_only=True))
        assert (r.source_side, r.source_id, r.destination_id) == ("dataverse", c.dv_id, c.bc_id)
        assert (r.status, r.reason, r.message, r.event, r.attempts) == (
            "skipped",
            "deleted",
            "gone",
            b"first",
            1,
        )
        await state.elapse()
        await problems.list_deleted(c, "dataverse", "still gone", b"second")
        [again] = await problems.records(Selection(everything=True))
        assert (again.message, again.event) == ("still gone", b"first")
        assert again.last_failed_at > r.last_failed_at
        assert again.first_failed_at == r.first_failed_at

    async def test_listing_a_failed_record_as_deleted_skips_it(self, state: StateHarness) -> None:
        c = coupling()
        retry = status(c.bc_id, destination_id="x", next_attempt_at=await state.now(), attempts=4)
        await state.stores.apply_state.commit(effects(statuses=[retry]))
        await state.stores.problems.list_deleted(c, "bc", "gone", b"e")
        [r] = await state.stores.problems.records(Selection(everything=True))
        assert (r.status, r.reason, r.destination_id, r.attempts) == ("skipped", "deleted", "x", 4)
        assert await state.stores.apply_state.claim_due("CUSTOMER", 10, 60.0) == []


class TestMemoryProblems(ProblemsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresProblems(ProblemsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
