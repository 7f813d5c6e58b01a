"""A field mapping's Status (``enabled``) and its transformation rules, through
the decisions of a coupled record: a disabled field is never written nor
compared; a transformed value is compared as the rules make it, so that it
never comes back as a change and the sides never start a ping-pong."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.cli.mappings import _detail
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import changes, map_values, written_image
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
from tablesync.core.plan import Unchanged, Update, counters_of, decide_coupled
from tablesync.core.records import Ref, Row
from tablesync.core.transformation import Replace, Uppercase
from tests.unit.test_plan import BACK, BC_ID, DV_ID, T0, account, coupling, customer, event

DOCUMENT: dict[str, Any] = yaml.safe_load(default_mapping_file().read_text())


def _with_name_field(**options: Any) -> tuple[MappingSet, TableMapping]:
    """The shipped mappings, CUSTOMER's displayName <-> name with ``options``."""
    doc = copy.deepcopy(DOCUMENT)
    fields = doc["mappings"]["CUSTOMER"]["fields"]
    (at,) = [i for i, f in enumerate(fields) if f.get("bc") == "displayName"]
    fields[at] = {**fields[at], **options}
    mappings = build_mappings(doc, catalog_tables())
    return mappings, mappings.get("CUSTOMER")


def _mapped(
    mappings: MappingSet, m: TableMapping, side: Side, fields: dict[str, FieldValue]
) -> Any:
    return map_values(m, direction_of(side), fields, BACK, mappings, creating=False)


# Status: Disabled


def test_a_disabled_field_is_kept_and_shown_but_carries_nothing() -> None:
    mappings, m = _with_name_field(enabled=False)
    (name,) = [f for f in m.fields if f.bc == "displayName"]
    assert not name.enabled
    assert name not in m.fields_for("to_integration")
    assert name not in m.fields_for("from_integration")
    shown = [f for f in _detail(m)["fields"] if f["bc"] == "displayName"]  # type: ignore[attr-defined]
    assert shown == [
        {"bc": "displayName", "dataverse": "name", "direction": "bidirectional", "enabled": False}
    ]
    # A create writes every enabled field, and not this one.
    created = map_values(
        m, "to_integration", customer(displayName="Renamed"), BACK, mappings, creating=True
    )
    payload = changes(created, "dataverse", None)
    assert "name" not in payload and payload["address1_city"] == "Atlanta"
    # What a write leaves on the record is not held against it either.
    assert "name" not in written_image(m, "dataverse", created, account())


def test_a_change_of_a_disabled_field_alone_is_unchanged_and_never_written() -> None:
    mappings, m = _with_name_field(enabled=False)
    dest = Row(DV_ID, T0, 'W/"100"', account(name="Adatum"))
    renamed = event("bc", customer(displayName="Renamed"), at=T0 + timedelta(seconds=1), etag="b2")
    d = decide_coupled(renamed, m, coupling(), dest, _mapped(mappings, m, "bc", renamed.fields))
    assert isinstance(d, Unchanged) and counters_of(d) == ("unchanged",)
    # With a change of an enabled field, only that one is written.
    both = event(
        "bc",
        customer(displayName="Renamed", city="Boston"),
        at=T0 + timedelta(seconds=1),
        etag="b2",
    )
    d = decide_coupled(both, m, coupling(), dest, _mapped(mappings, m, "bc", both.fields))
    assert isinstance(d, Update) and d.payload == {"address1_city": "Boston"}
    # And the other way: Dataverse's name is not read back into BC.
    back = event("dataverse", account(name="From DV"), at=T0 + timedelta(seconds=1), etag='W/"101"')
    bc_row = Row(BC_ID, T0, "b1", customer())
    d = decide_coupled(back, m, coupling(), bc_row, _mapped(mappings, m, "dataverse", back.fields))
    assert isinstance(d, Unchanged)


# Transformation rules


@dataclass
class TwoSides:
    """One coupled customer on both sides, synced the way apply does: a
    side's change is decided against the other's record, the write is made
    and its new version recorded on the coupling, and the written side's
    version then comes back as a change of its own."""

    mappings: MappingSet
    mapping: TableMapping
    rows: dict[Side, Row]
    coupling: Coupling
    writes: int = 0
    tick: int = 0

    def _stamp(self) -> tuple[Any, str]:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick), f'W/"{100 + self.tick}"'

    def edit(self, side: Side, **fields: FieldValue) -> None:
        at, etag = self._stamp()
        row = self.rows[side]
        self.rows[side] = Row(row.id, at, etag, {**row.fields, **fields})

    def sync(self, side: Side) -> bool:
        """One change of ``side`` synced; whether it wrote to the other side."""
        dest: Side = "dataverse" if side == "bc" else "bc"
        row = self.rows[side]
        e = event(side, dict(row.fields), at=row.modified_at, etag=row.etag)
        mapped = _mapped(self.mappings, self.mapping, side, e.fields)
        d = decide_coupled(e, self.mapping, self.coupling, self.rows[dest], mapped)
        if isinstance(d, Unchanged):
            assert d.coupling is not None
            self.coupling = d.coupling
            return False
        assert isinstance(d, Update), d
        self.edit(dest, **{k: v for k, v in d.payload.items() if not isinstance(v, Ref)})
        written = self.rows[dest]
        self.coupling = d.coupling.with_stamp(dest, Stamp(written.modified_at, written.etag))
        self.writes += 1
        return True

    def settle(self, first: Side, *, most: int = 10) -> None:
        """Syncs ``first``'s change and every change a write makes, until quiet."""
        pending: list[Side] = [first]
        for _ in range(most):
            if not pending:
                return
            side = pending.pop(0)
            if self.sync(side):
                pending.append("dataverse" if side == "bc" else "bc")
        raise AssertionError(
            f"still writing after {most} syncs: a ping-pong ({self.writes} writes)"
        )


def _two_sides(**options: Any) -> TwoSides:
    mappings, m = _with_name_field(**options)
    at = T0
    rows: dict[Side, Row] = {
        "bc": Row(BC_ID, at, 'W/"bc1"', customer()),
        "dataverse": Row(DV_ID, at, 'W/"100"', account()),
    }
    c = Coupling("CUSTOMER", BC_ID, DV_ID, "10000", Stamp(at, 'W/"bc1"'), Stamp(at, 'W/"100"'))
    return TwoSides(mappings, m, rows, c)


def test_rules_apply_on_their_way_only_and_are_loaded_in_order() -> None:
    _, m = _with_name_field(
        transformation_rules=[{"type": "replace", "find": "x", "replace_with": "xx"}, "uppercase"],
        transformation_direction="to_integration",
    )
    (name,) = [f for f in m.fields if f.bc == "displayName"]
    assert name.transform.rules == (Replace("x", "xx"), Uppercase())
    assert name.transform.rules_for("to_integration") == name.transform.rules
    assert name.transform.rules_for("from_integration") == ()


def test_a_transformed_value_is_written_once_and_never_comes_back() -> None:
    # Doubling every X is not idempotent: were the transformed name taken for
    # a change of Dataverse's, BC would get "BOXX", Dataverse "BOXXXX", and on.
    sides = _two_sides(
        transformation_rules=["uppercase", {"type": "replace", "find": "X", "replace_with": "XX"}],
        transformation_direction="to_integration",
    )
    sides.edit("bc", displayName="Box")
    sides.settle("bc")
    assert sides.writes == 1
    assert sides.rows["dataverse"].fields["name"] == "BOXX"
    assert sides.rows["bc"].fields["displayName"] == "Box"
    # A second pass over both sides writes nothing.
    assert not sides.sync("bc") and not sides.sync("dataverse")
    # A user's change in Dataverse goes to BC as it is (the rules are BC's way only)...
    sides.edit("dataverse", name="Crate")
    sides.settle("dataverse")
    assert sides.rows["bc"].fields["displayName"] == "Crate"
    # ...and comes back through the rules on the next change of BC's.
    sides.edit("bc", city="Boston")
    sides.settle("bc")
    assert sides.rows["dataverse"].fields["name"] == "CRATE"
    assert not sides.sync("bc") and not sides.sync("dataverse")


def test_a_case_rule_towards_bc_is_stable_after_one_sync() -> None:
    sides = _two_sides(
        transformation_rules=["trim", "title_case"], transformation_direction="from_integration"
    )
    sides.edit("dataverse", name="  the bike SHOP ")
    sides.settle("dataverse")
    assert sides.rows["bc"].fields["displayName"] == "The Bike Shop"
    assert sides.rows["dataverse"].fields["name"] == "  the bike SHOP "
    assert sides.writes == 1
    assert not sides.sync("bc") and not sides.sync("dataverse")


def test_a_rule_and_max_length_together_hold_the_longer_original() -> None:
    sides = _two_sides(
        transformation_rules=["uppercase"],
        transformation_direction="to_integration",
        max_length=8,
    )
    sides.edit("bc", displayName="Adatum Corporation")
    sides.settle("bc")
    assert sides.rows["dataverse"].fields["name"] == "ADATUM C"
    assert sides.rows["bc"].fields["displayName"] == "Adatum Corporation"
    assert not sides.sync("dataverse")


_RULES = st.sampled_from(
    [
        "uppercase",
        "lowercase",
        "title_case",
        "trim",
        "remove_diacritics",
        "remove_non_alphanumeric",
        {"type": "replace", "find": "a", "replace_with": "aa"},
        {"type": "replace", "find": " ", "replace_with": ""},
        {"type": "regex_replace", "pattern": r"(\w)(\w)", "replace_with": r"\2\1"},
        {"type": "substring", "start": 2, "length": 5},
        {"type": "substring", "start_text": "-"},
        {"type": "lookup_table", "pairs": [["Aa", "Bb"], ["Bb", "Aa"]]},
    ]
)
_NAMES = st.text(alphabet="aAbB -éx", max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(_RULES, min_size=1, max_size=3),
    st.sampled_from(["to_integration", "from_integration"]),
    st.sampled_from(["bc", "dataverse"]),
    _NAMES,
)
def test_no_rules_and_no_edit_start_a_ping_pong(
    rules: list[Any], way: str, edited: Side, name: str
) -> None:
    sides = _two_sides(transformation_rules=rules, transformation_direction=way)
    sides.edit(edited, **({"displayName": name} if edited == "bc" else {"name": name}))
    sides.settle(edited)
    # The edit crosses once, and its transformed value, when the rules change
    # it, once more back to the side they write to; then both are at rest.
    assert sides.writes <= 2
    assert not sides.sync("bc") and not sides.sync("dataverse")
