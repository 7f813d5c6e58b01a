"""A BC company's scope: its topics and groups, BC's default Dataverse filter, the stamp."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.companies import (
    COMPANY_LOOKUP,
    COMPANY_SET,
    COMPANY_VALUE,
    SINGLE,
    CompanyScope,
)
from tablesync.core.filters import parse, to_odata
from tablesync.core.records import Ref

USA_BC = "6f0b7c8e-0000-4000-8000-000000000001"
USA_DV = "a1b2c3d4-0000-4000-8000-0000000000aa"
CANADA_DV = "a1b2c3d4-0000-4000-8000-0000000000bb"
USA = CompanyScope(USA_BC, USA_DV)


def test_the_single_company_is_named_and_filtered_as_before() -> None:
    mapping_filter = parse("statecode eq 0")
    assert SINGLE.single
    assert SINGLE.topic("cdc.bc.customers") == "cdc.bc.customers"
    assert SINGLE.group("apply.CUSTOMER") == "apply.CUSTOMER"
    assert SINGLE.dataverse_filter(None) is None
    assert SINGLE.dataverse_filter(mapping_filter) == mapping_filter
    assert SINGLE.stamped({"name": "Adatum"}) == {"name": "Adatum"}


def test_a_company_has_topics_and_groups_of_its_own() -> None:
    assert USA.topic("cdc.bc.customers") == f"cdc.bc.customers.{USA_BC}"
    assert USA.group("apply.CUSTOMER") == f"apply.CUSTOMER.{USA_BC}"


def test_the_dataverse_filter_is_this_company_or_none_and_the_mappings() -> None:
    combined = USA.dataverse_filter(parse("statecode eq 0"))
    assert combined is not None
    assert to_odata(combined) == (
        f"statecode eq 0 and ({COMPANY_VALUE} eq {USA_DV} or {COMPANY_VALUE} eq null)"
    )
    assert USA.sees({COMPANY_VALUE: USA_DV.upper()})
    assert USA.sees({COMPANY_VALUE: None})
    assert USA.sees({})
    assert not USA.sees({COMPANY_VALUE: CANADA_DV})
    assert not USA.sees({COMPANY_VALUE: USA_DV, "statecode": 1}, parse("statecode eq 0"))


@given(st.uuids(), st.uuids(), st.booleans())
def test_a_row_is_seen_by_its_own_company_only(mine: UUID, other: UUID, stamped: bool) -> None:
    scope = CompanyScope(str(uuid4()), str(mine))
    owner = str(mine if stamped else other)
    assert scope.sees({COMPANY_VALUE: owner}) == (stamped or mine == other)


def test_a_write_for_a_company_is_stamped_with_it() -> None:
    values = USA.stamped({"name": "Adatum"})
    assert values == {"name": "Adatum", COMPANY_LOOKUP: Ref(COMPANY_SET, USA_DV)}
    assert USA.owner_of({COMPANY_VALUE: USA_DV.upper()}) == USA_DV
    assert USA.owner_of({}) is None


@pytest.mark.parametrize(
    ("key", "dataverse_id", "message"),
    [
        (USA_BC, None, "no bcbi_company row"),
        (USA_BC.upper(), USA_DV, "lower-case BC id"),
        (USA_BC, "not-a-guid", "is no GUID"),
    ],
)
def test_a_bad_scope_is_refused(key: str, dataverse_id: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompanyScope(key, dataverse_id)
