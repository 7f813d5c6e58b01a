"""The ``Couplings`` port: what every implementation must do."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tablesync.core.couplings import Stamp
from tablesync.core.fieldmap import LookupKey
from tests.contract.state_fixtures import (
    StateHarness,
    coupling,
    effects,
    memory_state_fixture,  # noqa: F401
    new_id,
    postgres_state_fixture,  # noqa: F401
    state_dsn,  # noqa: F401
    state_template,  # noqa: F401
)


class CouplingsContract:
    @pytest.fixture
    def state(self) -> StateHarness:
        raise NotImplementedError

    async def test_a_coupling_is_found_by_either_sides_id(self, state: StateHarness) -> None:
        couplings = state.stores.couplings
        c = coupling()
        await couplings.couple(c, "to_integration")

        stored = replace(c, last_direction="to_integration")
        assert await couplings.by_ids("CUSTOMER", "bc", [c.bc_id, new_id()]) == {c.bc_id: stored}
        assert await couplings.by_ids("CUSTOMER", "dataverse", [c.dv_id]) == {c.dv_id: stored}
        assert await couplings.get("CUSTOMER", "dataverse", c.dv_id) == stored
        assert await couplings.get("CUSTOMER", "bc", new_id()) is None
        assert await couplings.by_ids("VENDOR", "bc", [c.bc_id]) == {}
        assert await couplings.coupled_among("CUSTOMER", "bc", [c.bc_id, new_id()]) == {c.bc_id}
        assert await couplings.coupled_among("CUSTOMER", "dataverse", [c.dv_id]) == {c.dv_id}
        assert await couplings.of_mapping("CUSTOMER") == [stored]
        assert await couplings.of_mapping("VENDOR") == []

    async def test_ids_are_read_back_in_lower_case(self, state: StateHarness) -> None:
        couplings = state.stores.couplings
        c = coupling()
        await couplings.couple(replace(c, bc_id=c.bc_id.upper(), dv_id=c.dv_id.upper()), None)
        found = await couplings.by_ids("CUSTOMER", "bc", [c.bc_id.upper()])
        assert list(found) == [c.bc_id]
        assert (found[c.bc_id].bc_id, found[c.bc_id].dv_id) == (c.bc_id, c.dv_id)
        assert await couplings.coupled_among("CUSTOMER", "dataverse", [c.dv_id.upper()]) == {
            c.dv_id
        }
        assert await couplings.get("CUSTOMER", "bc", c.bc_id.upper()) is not None

    async def test_a_page_of_ids_answers_the_stamps_each_coupling_holds_now(
        self, state: StateHarness
    ) -> None:
        """What capture asks, once per page and mapping, to leave out apply's echoes:
        the stamps apply's last commit recorded, on the side asked, for the ids coupled."""
        couplings = state.stores.couplings
        page = [coupling(bc_key=f"{n}0000") for n in range(1, 4)]
        for c in page:
            await couplings.couple(c, "to_integration")
        written = Stamp(datetime(2026, 2, 1, 12, 5, 0, 123000, tzinfo=UTC), 'W/"7"')
        updated = replace(page[1], dv_stamp=written, last_direction="to_integration")
        await state.stores.apply_state.commit(
            effects(couplings=[(updated, "to_integration")], positions={("t.cdc", 0): 1})
        )
        elsewhere = coupling("VENDOR", dv_id=page[0].dv_id, etag='W/"9"')
        await couplings.couple(elsewhere, None)
        uncoupled = new_id()

        asked = [c.dv_id for c in page] + [uncoupled]
        found = await couplings.by_ids("CUSTOMER", "dataverse", asked)
        assert {i: c.dv_stamp for i, c in found.items()} == {
            page[0].dv_id: page[0].dv_stamp,
            page[1].dv_id: written,
            page[2].dv_id: page[2].dv_stamp,
        }
        assert {i: c.bc_stamp for i, c in found.items()}[page[1].dv_id] == page[1].bc_stamp
        vendor = await couplings.by_ids("VENDOR", "dataverse", asked)
        assert {i: c.dv_stamp for i, c in vendor.items()} == {page[0].dv_id: elsewhere.dv_stamp}
        bc = await couplings.by_ids("CUSTOMER", "bc", [c.bc_id for c in page])
        assert [bc[c.bc_id].bc_stamp for c in page] == [c.bc_stamp for c in page]

    async def test_an_id_that_is_no_guid_is_refused(self, state: StateHarness) -> None:
        with pytest.raises(ValueError, match="badly formed"):
            await state.stores.couplings.by_ids("CUSTOMER", "bc", ["10000"])

    async def test_recoupling_a_record_replaces_its_stamps_and_keeps_what_is_not_said(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        c = coupling(bc_key=" c-10000 ")
        await couplings.couple(c, "to_integration")
        [before] = await couplings.listing("CUSTOMER")
        assert before.coupling.bc_key == "C-10000"  # trimmed and upper-cased, as BC compares
        await state.elapse()

        later = Stamp(datetime(2026, 2, 1, 12, 1, tzinfo=UTC), 'W/"2"')
        await couplings.couple(replace(c, bc_key=None, bc_stamp=later), None)
        [after] = await couplings.listing("CUSTOMER")
        assert after.coupling.bc_stamp == later
        assert after.coupling.bc_key == "C-10000"
        assert after.last_direction == "to_integration"
        assert after.coupled_at == before.coupled_at
        assert after.last_synced_at > before.last_synced_at

        await couplings.couple(replace(c, bc_key="C-20000"), "from_integration")
        [again] = await couplings.listing("CUSTOMER")
        assert (again.coupling.bc_key, again.last_direction) == ("C-20000", "from_integration")

    async def test_a_dataverse_row_is_coupled_to_one_bc_record_only(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        first = coupling(bc_key="10000")
        await couplings.couple(first, None)
        second = coupling(bc_key="20000", dv_id=first.dv_id)
        await couplings.couple(second, None)

        assert await couplings.get("CUSTOMER", "bc", first.bc_id) is None
        found = await couplings.get("CUSTOMER", "dataverse", first.dv_id)
        assert found is not None and found.bc_id == second.bc_id
        assert await couplings.count("CUSTOMER") == 1

        # A BC record coupled to another row leaves its old row uncoupled.
        moved = replace(second, dv_id=new_id())
        await couplings.couple(moved, None)
        assert await couplings.coupled_among("CUSTOMER", "dataverse", [first.dv_id]) == set()
        assert await couplings.coupled_among("CUSTOMER", "dataverse", [moved.dv_id]) == {
            moved.dv_id
        }
        assert await couplings.count("CUSTOMER") == 1

    async def test_a_dataverse_row_may_be_coupled_once_in_each_mapping(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        customer = coupling("CUSTOMER")
        vendor = coupling("VENDOR", dv_id=customer.dv_id)
        await couplings.couple(customer, None)
        await couplings.couple(vendor, None)
        assert await couplings.count() == 2
        assert await couplings.count("VENDOR") == 1
        assert await couplings.count("CONTACTS") == 0

    async def test_uncouple_by_either_side_returns_the_coupling_once(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        a, b = coupling(), coupling(bc_key="20000")
        await couplings.couple(a, "to_integration")
        await couplings.couple(b, None)
        removed = await couplings.uncouple("CUSTOMER", "dataverse", a.dv_id)
        assert removed == replace(a, last_direction="to_integration")
        assert await couplings.uncouple("CUSTOMER", "dataverse", a.dv_id) is None
        assert await couplings.uncouple("CUSTOMER", "bc", b.bc_id) == b
        assert await couplings.uncouple("VENDOR", "bc", b.bc_id) is None
        assert await couplings.count() == 0

    async def test_resolve_looks_up_through_a_mappings_couplings(self, state: StateHarness) -> None:
        couplings = state.stores.couplings
        currency = coupling("CURRENCY", bc_key="eur")
        keyless = coupling("CURRENCY", bc_key=None)
        await couplings.couple(currency, None)
        await couplings.couple(keyless, None)
        keys = [
            LookupKey("CURRENCY", "bc", "EUR"),
            LookupKey("CURRENCY", "bc", "USD"),
            LookupKey("CURRENCY", "dataverse", currency.dv_id),
            LookupKey("CURRENCY", "dataverse", keyless.dv_id),
            LookupKey("CURRENCY", "dataverse", "not-a-guid"),
            LookupKey("VENDOR", "bc", "EUR"),
        ]
        assert await couplings.resolve(keys) == {
            LookupKey("CURRENCY", "bc", "EUR"): currency.dv_id,
            LookupKey("CURRENCY", "dataverse", currency.dv_id): "EUR",
        }
        assert await couplings.resolve([]) == {}

    async def test_all_ids_are_those_coupled_before_and_not_flagged_deleted(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        old, gone = coupling(), coupling(bc_key="20000")
        await couplings.couple(old, None)
        await couplings.couple(gone, None)
        await state.elapse()
        cut = await state.now()
        await state.elapse()
        await couplings.couple(coupling(bc_key="30000"), None)
        assert await state.stores.problems.flag_deleted(gone, "dataverse")

        assert await couplings.all_ids("CUSTOMER", "bc", coupled_before=cut) == {
            old.bc_id,
            gone.bc_id,
        }
        assert await couplings.all_ids("CUSTOMER", "dataverse", coupled_before=cut) == {old.dv_id}
        assert await couplings.all_ids("VENDOR", "bc", coupled_before=cut) == set()

    async def test_listing_finds_by_id_or_key_newest_coupled_first_per_mapping(
        self, state: StateHarness
    ) -> None:
        couplings = state.stores.couplings
        first = coupling("CUSTOMER", bc_key="10000")
        await couplings.couple(first, None)
        await state.elapse()
        second = coupling("CUSTOMER", bc_key="20000")
        await couplings.couple(second, "from_integration")
        await state.elapse()
        contact = coupling("CONTACTS", bc_key="CT1")
        await couplings.couple(contact, None)

        rows = await couplings.listing()
        assert [r.coupling.bc_id for r in rows] == [contact.bc_id, second.bc_id, first.bc_id]
        assert rows[1].last_direction == "from_integration"
        assert rows[1].coupled_at == rows[1].last_synced_at
        assert [r.coupling.bc_id for r in await couplings.listing("CUSTOMER", limit=1)] == [
            second.bc_id
        ]
        for search in (first.bc_id.upper(), first.dv_id, "10000"):
            found = await couplings.listing(search=search)
            assert [r.coupling.bc_id for r in found] == [first.bc_id], search
        assert await couplings.listing(search="ct1") != []
        assert await couplings.listing("CUSTOMER", search="ct1") == []

    async def test_a_coupling_carries_its_bc_company(self, state: StateHarness) -> None:
        couplings = state.stores.couplings
        usa = replace(coupling(), company="usa")
        canada = replace(coupling(), company="canada")
        await couplings.couple(usa, "to_integration")
        await state.stores.apply_state.commit(
            effects(couplings=[(canada, "to_integration")], positions={("t.cdc", 0): 1})
        )

        found = await couplings.by_ids("CUSTOMER", "bc", [usa.bc_id, canada.bc_id])
        assert {c.company for c in found.values()} == {"usa", "canada"}
        assert (await couplings.get("CUSTOMER", "dataverse", canada.dv_id) or usa).company == (
            "canada"
        )
        listed = await couplings.listing(company="canada")
        assert [r.coupling.bc_id for r in listed] == [canada.bc_id]
        assert len(await couplings.listing()) == 2
        assert {r.coupling.company for r in await couplings.listing(company="")} == set()
        later = datetime(2100, 1, 1, tzinfo=UTC)
        assert await couplings.all_ids("CUSTOMER", "bc", coupled_before=later) == {
            usa.bc_id,
            canada.bc_id,
        }
        assert await couplings.all_ids(
            "CUSTOMER", "dataverse", coupled_before=later, company="usa"
        ) == {usa.dv_id}

    async def test_a_number_resolves_within_its_company_only(self, state: StateHarness) -> None:
        """Two companies may both have customer 10000: a lookup of one company's
        10000 never finds the other's account."""
        couplings = state.stores.couplings
        usa = replace(coupling(bc_key="10000"), company="usa")
        canada = replace(coupling(bc_key="10000"), company="canada")
        for c in (usa, canada):
            await couplings.couple(c, None)

        keys = [
            LookupKey("CUSTOMER", "bc", "10000", "usa"),
            LookupKey("CUSTOMER", "bc", "10000", "canada"),
            LookupKey("CUSTOMER", "bc", "10000", "mexico"),
            LookupKey("CUSTOMER", "dataverse", canada.dv_id, "canada"),
            LookupKey("CUSTOMER", "dataverse", usa.dv_id, "canada"),
        ]
        assert await couplings.resolve(keys) == {
            keys[0]: usa.dv_id,
            keys[1]: canada.dv_id,
            keys[3]: "10000",
        }
        # A coupling of no company is the single company's, found by keys without one.
        single = coupling(bc_key="20000")
        await couplings.couple(single, None)
        plain = LookupKey("CUSTOMER", "bc", "20000")
        assert await couplings.resolve([plain]) == {plain: single.dv_id}


class TestMemoryCouplings(CouplingsContract):
    @pytest.fixture
    def state(self, memory_state: StateHarness) -> StateHarness:
        return memory_state


@pytest.mark.integration
class TestPostgresCouplings(CouplingsContract):
    @pytest.fixture
    def state(self, postgres_state: StateHarness) -> StateHarness:
        return postgres_state
