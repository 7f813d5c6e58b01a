"""The shared catalog: names as Microsoft documents them, and a pure module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tablesync.core import catalog
from tablesync.core.catalog import CATALOG, entities, entity


def test_bc_entity_sets_follow_api_v2() -> None:
    customers = entity("bc", "customers")
    assert customers.key == "id" and customers.modified_field == "lastModifiedDateTime"
    assert list(customers.fields)[:4] == ["id", "number", "displayName", "type"]
    assert customers.fields["id"].read_only
    assert customers.fields["balanceDue"].read_only
    assert customers.fields["blocked"].options == (" ", "Ship", "Invoice", "All")
    assert "contactBusinessRelation" in entity("bc", "contacts").fields
    assert entity("bc", "vendors").fields["blocked"].options == (" ", "Payment", "All")
    assert entity("bc", "currencies").fields["code"].required
    assert customers.api_route is None


def test_salespeople_are_a_custom_api_page() -> None:
    salespeople = entity("bc", "salespeople")
    assert salespeople.api_route == "tablesync/integration/v1.0"
    assert salespeople.number_field == "code"
    assert set(salespeople.fields) == {
        "id",
        "code",
        "name",
        "email",
        "phoneNo",
        "jobTitle",
        "blocked",
        "lastModifiedDateTime",
    }


def test_dataverse_tables_and_lookups() -> None:
    accounts = entity("dataverse", "accounts")
    assert accounts.key == "accountid" and accounts.version_field == "versionnumber"
    assert [k.fields for k in accounts.alternate_keys] == [("accountnumber",)]
    owner = accounts.lookups["ownerid"]
    assert owner.value_field == "_ownerid_value"
    assert [(t.entity_set, t.navigation) for t in owner.targets] == [("systemusers", "ownerid")]
    parent = entity("dataverse", "contacts").lookups["parentcustomerid"]
    assert parent.polymorphic
    assert [t.navigation for t in parent.targets] == [
        "parentcustomerid_account",
        "parentcustomerid_contact",
    ]
    contacts = entity("dataverse", "contacts")
    assert contacts.fields["fullname"].computed_from == ("firstname", "lastname")
    assert contacts.fields["fullname"].read_only
    for table in entities("dataverse"):
        for name in (
            "createdon",
            "modifiedon",
            "_createdby_value",
            "_modifiedby_value",
            "versionnumber",
        ):
            assert table.fields[name].read_only, (table.entity_set, name)


def test_unknown_entity_set_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="customers"):
        entity("bc", "journals")


def test_every_lookup_target_is_in_the_catalog() -> None:
    for table in CATALOG.values():
        for lookup in table.lookups.values():
            for target in lookup.targets:
                assert ("dataverse", target.entity_set) in CATALOG
            assert table.fields[lookup.value_field].lookup == lookup.attribute


def test_catalog_imports_the_standard_library_only() -> None:
    tree = ast.parse(Path(catalog.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "tablesync"}
    assert modules <= allowed, modules - allowed
