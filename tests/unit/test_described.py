"""The tables the services work with: custom tables and pages from the metadata, the
built-in catalog layered on top; mappings of custom tables load against them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.odata.entities import described_specs
from tablesync.core.described import bc_stamp, described_tables
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.core.metadata import (
    FieldInfo,
    TableInfo,
    parse_lookup_navigations,
    with_navigations,
)
from tablesync.errors import MappingError

PROJECTS_BC = TableInfo(
    side="bc",
    name="project",
    entity_set="projects",
    key="id",
    fields=(
        FieldInfo("id", "Edm.Guid", creatable=False, updatable=False, key=True),
        FieldInfo("code", "Edm.String", max_length=20),
        FieldInfo("customerNumber", "Edm.String", max_length=20),
        FieldInfo("lastModifiedDateTime", "Edm.DateTimeOffset", creatable=False, updatable=False),
    ),
    custom=True,
    route="contoso/projects/v1.0",
)
PROJECTS_DV = TableInfo(
    side="dataverse",
    name="new_project",
    entity_set="new_projects",
    key="new_projectid",
    fields=(
        FieldInfo("new_projectid", "Uniqueidentifier", key=True, updatable=False),
        FieldInfo("new_name", "String", max_length=100),
        FieldInfo("new_accountid", "Lookup", targets=("account",)),
        FieldInfo("new_ownerless", "Lookup", targets=("new_unknown",)),
        FieldInfo("modifiedon", "DateTime", creatable=False, updatable=False),
    ),
    custom=True,
)
ACCOUNT_TIER = TableInfo(
    side="dataverse",
    name="account",
    entity_set="accounts",
    key="accountid",
    fields=(FieldInfo("accountid", "Uniqueidentifier", key=True), FieldInfo("new_tier", "String")),
)

PROJECT_MAPPING: dict[str, Any] = {
    "bc_table": "projects",
    "dataverse_table": "new_projects",
    "direction": "bidirectional",
    "depends_on": ["CUSTOMER"],
    "fields": [
        {"bc": "code", "dataverse": "new_name"},
        {"bc": "customerNumber", "dataverse": "new_accountid", "lookup": "CUSTOMER"},
    ],
}
CUSTOMER_MAPPING: dict[str, Any] = {
    "bc_table": "customers",
    "dataverse_table": "accounts",
    "direction": "bidirectional",
    "bc_key": "number",
    "fields": [{"bc": "number", "dataverse": "accountnumber"}],
}


def _document(**extra: Any) -> dict[str, Any]:
    return {"mappings": {"CUSTOMER": CUSTOMER_MAPPING, "PROJECT": PROJECT_MAPPING, **extra}}


def test_a_custom_table_is_refused_by_the_catalog_alone() -> None:
    with pytest.raises(MappingError, match="projects"):
        build_mappings(_document(), catalog_tables())


def test_a_mapping_of_custom_tables_loads_against_their_metadata() -> None:
    mappings = build_mappings(_document(), described_tables([PROJECTS_BC, PROJECTS_DV]))
    assert mappings.names() == ("CUSTOMER", "PROJECT")
    fields = mappings.get("PROJECT").fields
    # What BC stores for "no value" in a custom page's field follows from its type.
    assert {f.bc: f.bc_type for f in fields} == {
        "code": "Edm.String",
        "customerNumber": "Edm.String",
    }
    lookup = next(f for f in fields if f.lookup is not None)
    # Bound through the lookup attribute, to the target's entity set from the catalog.
    assert lookup.lookup is not None
    assert lookup.lookup.navigation == (("accounts", "new_accountid"),)


def test_custom_lookup_reads_as_its_value_field_and_is_not_written_so() -> None:
    tables = described_tables([PROJECTS_DV])
    info = tables.get("dataverse", "new_projects")
    assert info is not None
    assert "_new_accountid_value" in info.fields
    assert "_new_accountid_value" in info.read_only
    assert "new_accountid" not in info.fields
    assert info.lookups["new_accountid"] == {"accounts": "new_accountid"}
    # A target nobody describes gives the lookup no target, not a guessed set.
    assert info.lookups["new_ownerless"] == {}
    assert {"new_projectid", "modifiedon"} <= info.read_only


def test_the_catalog_stands_where_both_know_a_table_and_custom_columns_join_it() -> None:
    builtin = catalog_tables().get("dataverse", "accounts")
    tables = described_tables([ACCOUNT_TIER])
    info = tables.get("dataverse", "accounts")
    assert builtin is not None and info is not None
    assert info.fields == builtin.fields | {"new_tier"}
    assert info.read_only == builtin.read_only
    assert info.lookups == builtin.lookups


def test_a_read_only_custom_field_is_refused_as_a_destination() -> None:
    doc = _document()
    doc["mappings"]["PROJECT"] = {
        **PROJECT_MAPPING,
        "direction": "from_integration",
        "fields": [{"bc": "lastModifiedDateTime", "dataverse": "new_name"}],
    }
    with pytest.raises(MappingError, match="lastModifiedDateTime"):
        build_mappings(doc, described_tables([PROJECTS_BC, PROJECTS_DV]))


@given(st.sampled_from(["lastModifiedDateTime", "systemModifiedAt", None]))
def test_a_bc_page_stamp_is_the_modified_on_field_it_has(stamp: str | None) -> None:
    fields = (FieldInfo("id", "Edm.Guid", key=True),) + (
        (FieldInfo(stamp, "Edm.DateTimeOffset"),) if stamp else ()
    )
    table = TableInfo(side="bc", name="p", entity_set="ps", key="id", fields=fields)
    assert bc_stamp(table) == stamp


def test_specs_of_custom_sets_come_from_their_metadata() -> None:
    bc = described_specs("bc", "/BC/api/v2.0", [PROJECTS_BC])("projects")
    assert bc.route == "/BC/api/contoso/projects/v1.0/companies({company})/projects"
    assert (bc.key, bc.stamp) == ("id", "lastModifiedDateTime")
    dv = described_specs("dataverse", "/api/data/v9.2", [PROJECTS_DV])("new_projects")
    assert (dv.key, dv.stamp, dv.route) == ("new_projectid", "modifiedon", "new_projects")
    # The catalog's own sets keep the catalog's spec.
    accounts = described_specs("dataverse", "/api/data/v9.2", [ACCOUNT_TIER])("accounts")
    assert accounts.key == "accountid"


NAVIGATIONS = """<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
  <edmx:DataServices>
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Microsoft.Dynamics.CRM">
      <EntityType Name="new_project">
        <Key><PropertyRef Name="new_projectid"/></Key>
        <Property Name="new_projectid" Type="Edm.Guid"/>
        <Property Name="_new_accountid_value" Type="Edm.Guid"/>
        <NavigationProperty Name="new_AccountId" Type="Microsoft.Dynamics.CRM.account">
          <ReferentialConstraint Property="_new_accountid_value" ReferencedProperty="accountid"/>
        </NavigationProperty>
        <NavigationProperty Name="new_tasks" Type="Collection(Microsoft.Dynamics.CRM.task)"/>
      </EntityType>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>"""


def test_a_lookup_binds_through_the_navigation_property_the_metadata_names() -> None:
    navigations = parse_lookup_navigations(NAVIGATIONS)
    assert navigations == {"new_project": {"new_accountid": "new_AccountId"}}
    info = described_tables([with_navigations(PROJECTS_DV, navigations)]).get(
        "dataverse", "new_projects"
    )
    assert info is not None
    assert info.lookups["new_accountid"] == {"accounts": "new_AccountId"}
