"""What a load of mappings would change, compared as validated mappings."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.core.mapping_diff import MappingChange, diff_mappings
from tablesync.core.mapping_load import build_mappings, catalog_tables, change_mapping
from tablesync.core.mappings import MappingSet

DOCUMENT: dict[str, Any] = yaml.safe_load(default_mapping_file().read_text())


def _build(document: dict[str, Any]) -> MappingSet:
    return build_mappings(document, catalog_tables())


def test_the_same_mappings_differ_in_nothing() -> None:
    respelled = copy.deepcopy(DOCUMENT)
    respelled["mappings"]["CUSTOMER"]["table_filter"] = "(blocked   eq ' ')"
    assert diff_mappings(_build(DOCUMENT), _build(respelled)) == []


def test_an_operators_change_shows_as_what_the_file_puts_back() -> None:
    in_force = copy.deepcopy(DOCUMENT)
    change_mapping(
        in_force,
        "CUSTOMER",
        catalog_tables(),
        sync_only_coupled=False,
        integration_table_filter="statecode eq 0",
    )
    changes = diff_mappings(_build(in_force), _build(DOCUMENT))
    assert [str(c) for c in changes] == [
        "~ CUSTOMER sync_only_coupled: false -> true",
        "~ CUSTOMER integration_table_filter: 'statecode eq 0' -> "
        "'statecode eq 0 and customertypecode eq 3'",
    ]


def test_fields_and_mappings_added_removed_and_changed() -> None:
    new = copy.deepcopy(DOCUMENT)
    fields = new["mappings"]["CUSTOMER"]["fields"]
    website = next(f for f in fields if f.get("bc") == "website")
    website["max_length"] = 60
    fields.remove(next(f for f in fields if f.get("bc") == "state"))
    fields.append({"bc": "type", "dataverse": "fax", "direction": "to_integration"})
    del new["mappings"]["CONTACTS"]
    current = copy.deepcopy(DOCUMENT)
    del current["mappings"]["SALESPEOPLE"]
    for m in current["mappings"].values():
        m["depends_on"] = [d for d in m.get("depends_on", []) if d != "SALESPEOPLE"]
        m["fields"] = [f for f in m["fields"] if f.get("lookup") != "SALESPEOPLE"]

    changes = diff_mappings(_build(current), _build(new))

    assert MappingChange("SALESPEOPLE", "added") in changes
    assert MappingChange("CONTACTS", "removed") in changes
    assert (
        MappingChange("CUSTOMER", "changed", "fields[website<->websiteurl].max_length", 80, 60)
        in changes
    )
    assert MappingChange("CUSTOMER", "removed", "fields[state<->address1_stateorprovince]") in (
        changes
    )
    assert MappingChange("CUSTOMER", "added", "fields[type<->fax]") in changes
    assert MappingChange("CUSTOMER", "added", "fields[salespersonCode<->ownerid]") in changes
    assert (
        MappingChange(
            "VENDOR",
            "changed",
            "depends_on",
            ("CURRENCY",),
            ("CURRENCY", "SALESPEOPLE"),
        )
        in changes
    )
    assert str(changes[-1]) == "- CONTACTS"


def test_a_field_disabled_and_given_rules_shows_each() -> None:
    new = copy.deepcopy(DOCUMENT)
    fields = new["mappings"]["CUSTOMER"]["fields"]
    next(f for f in fields if f.get("bc") == "website")["enabled"] = False
    next(f for f in fields if f.get("bc") == "city").update(
        transformation_rules=["trim", {"type": "substring", "length": 3}],
        transformation_direction="to_integration",
    )
    assert [str(c) for c in diff_mappings(_build(DOCUMENT), _build(new))] == [
        "~ CUSTOMER fields[city<->address1_city].transformation_rules: [] -> "
        "[trim, substring length=3]",
        "~ CUSTOMER fields[city<->address1_city].transformation_direction: "
        "(none) -> 'to_integration'",
        "~ CUSTOMER fields[website<->websiteurl].enabled: true -> false",
    ]
