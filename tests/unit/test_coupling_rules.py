"""The coupling a performed decision leaves between two records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.coupling_rules import (
    couple_created,
    couple_matched,
    coupled_to,
    key_of,
    restored,
    row_stamp,
)
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import FieldValue, RecordChanged, Side, other_side
from tablesync.core.plan import Create, Restore, stamp_of
from tablesync.core.records import Row
from tests.strategies import apply_couplings, apply_events, apply_rows

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
CONTACTS = MAPPINGS.get("CONTACTS")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
SIDES: st.SearchStrategy[Side] = st.sampled_from(["bc", "dataverse"])


def _event(side: Side, rid: str, fields: dict[str, FieldValue]) -> RecordChanged:
    return RecordChanged(
        side=side,
        table="customers" if side == "bc" else "accounts",
        record_id=rid,
        op="upsert",
        modified_at=T0,
        captured_at=T0,
        fields=fields,
        etag='W/"e1"',
    )


@given(st.one_of(st.none(), st.integers(), st.text(alphabet=" \tC1", max_size=4)))
def test_the_key_is_the_bc_records_number_unless_blank(value: FieldValue) -> None:
    key = key_of(CUSTOMER, {"number": value})
    assert key == (value if isinstance(value, str) and value.strip() else None)
    # A mapping without a natural key keeps none.
    assert key_of(CONTACTS, {"number": value}) is None


@given(apply_events(), apply_rows(), st.booleans())
def test_a_coupling_names_both_records_at_the_versions_synced(
    event: RecordChanged, row: Row, source_changed: bool
) -> None:
    source = Stamp(T1, 'W/"later"') if source_changed else stamp_of(event)
    c = coupled_to(CUSTOMER, event, row, source)
    dest = other_side(event.side)
    assert (c.id_on(event.side), c.id_on(dest)) == (event.record_id, row.id)
    assert (c.stamp_on(event.side), c.stamp_on(dest)) == (source, row_stamp(row))
    bc_fields = event.fields if event.side == "bc" else row.fields
    assert c.bc_key == key_of(CUSTOMER, bc_fields)
    assert c.mapping == "CUSTOMER" and not (c.bc_deleted or c.dv_deleted)


def test_a_create_couples_with_what_it_made_and_the_source_as_written_back() -> None:
    event = _event("dataverse", "dv1", {"name": "Adatum"})
    create = Create("bc", {"displayName": "Adatum"}, None, "dv1", stamp_of(event))
    made = Row("bc1", T1, 'W/"bc1"', {"number": "C00010"})
    assert couple_created(CUSTOMER, event, create, None, None) is None
    c = couple_created(CUSTOMER, event, create, made, None)
    assert c is not None and (c.bc_id, c.dv_id, c.bc_key) == ("bc1", "dv1", "C00010")
    assert c.dv_stamp == stamp_of(event)
    # The number written back to the source moved it on: that version is synced.
    after = Row("dv1", T1, 'W/"7"', {"accountnumber": "C00010"})
    c = couple_created(CUSTOMER, event, create, made, after)
    assert c is not None and c.dv_stamp == Stamp(T1, 'W/"7"')


def test_a_recovered_create_couples_with_the_record_the_crash_left() -> None:
    event = _event("bc", "bc1", {"number": "C1"})
    left = Row("dv1", T0, 'W/"3"', {})
    create = Create("dataverse", {}, "dv1", "bc1", stamp_of(event), matched=left, recovered=True)
    c = couple_created(CUSTOMER, event, create, None, None)
    assert c is not None and (c.bc_id, c.dv_id, c.dv_stamp, c.bc_key) == (
        "bc1",
        "dv1",
        row_stamp(left),
        "C1",
    )


def test_a_match_couples_with_the_record_as_the_payload_left_it() -> None:
    event = _event("bc", "bc1", {"number": "C1"})
    found = Row("dv1", T0, 'W/"3"', {"accountnumber": "C1"})
    create = Create("dataverse", {"name": "A"}, "dv1", "bc1", stamp_of(event), matched=found)
    assert couple_matched(CUSTOMER, event, create, None).dv_stamp == row_stamp(found)
    written = replace(found, etag='W/"4"', modified_at=T1)
    assert couple_matched(CUSTOMER, event, create, written).dv_stamp == row_stamp(written)


@given(apply_couplings(), SIDES, apply_rows())
def test_a_restore_replaces_the_deleted_side_and_keeps_the_survivor(
    old: Coupling, side: Side, row: Row
) -> None:
    d = Restore(side, {}, None, old)
    assert restored(CUSTOMER, d, None) is None
    new = restored(CUSTOMER, d, row)
    assert new is not None
    keep = other_side(side)
    assert new.id_on(side) == row.id and new.stamp_on(side) == row_stamp(row)
    assert new.id_on(keep) == old.id_on(keep) and new.stamp_on(keep) == old.stamp_on(keep)
    assert new.bc_key == (key_of(CUSTOMER, row.fields) if side == "bc" else old.bc_key)
    assert not (new.bc_deleted or new.dv_deleted)
