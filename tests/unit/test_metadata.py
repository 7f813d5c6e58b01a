"""The services' metadata parsed as Microsoft documents it, and mappings held against it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.mappings import FieldMapping, TableMapping, Transform
from tablesync.core.metadata import (
    FieldInfo,
    MetadataInvalid,
    Option,
    TableInfo,
    check_mapping,
    decode_xml_name,
    find_table,
    parse_attribute,
    parse_csdl,
    parse_entity_definition,
)

EDMX = "http://docs.oasis-open.org/odata/ns/edmx"
EDM = "http://docs.oasis-open.org/odata/ns/edm"

# The shape of BC's $metadata: sets contained in company, an enum of option names
# encoded as XmlConvert does, a computed property annotated outside its type.
BC_DOCUMENT = f"""<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="4.0" xmlns:edmx="{EDMX}">
  <edmx:DataServices>
    <Schema Namespace="Microsoft.NAV" xmlns="{EDM}">
      <EnumType Name="customerBlocked">
        <Member Name="_x0020_" Value="0"/>
        <Member Name="Ship" Value="1"/>
        <Member Name="Invoice" Value="2"/>
        <Member Name="All" Value="3"/>
      </EnumType>
      <EntityType Name="company">
        <Key><PropertyRef Name="id"/></Key>
        <Property Name="id" Type="Edm.Guid" Nullable="false"/>
        <Property Name="name" Type="Edm.String" MaxLength="30"/>
        <NavigationProperty Name="customers" Type="Collection(Microsoft.NAV.customer)"
            ContainsTarget="true"/>
        <NavigationProperty Name="parent" Type="Microsoft.NAV.company"/>
      </EntityType>
      <EntityType Name="customer">
        <Key><PropertyRef Name="id"/></Key>
        <Property Name="id" Type="Edm.Guid" Nullable="false"/>
        <Property Name="number" Type="Edm.String" MaxLength="20"/>
        <Property Name="displayName" Type="Edm.String" MaxLength="100"/>
        <Property Name="blocked" Type="Microsoft.NAV.customerBlocked"/>
        <Property Name="balanceDue" Type="Edm.Decimal" Scale="Variable">
          <Annotation Term="Org.OData.Core.V1.Computed" Bool="true"/>
        </Property>
        <Property Name="notes" Type="Edm.String" MaxLength="max"/>
        <Property Name="lastModifiedDateTime" Type="Edm.DateTimeOffset"/>
      </EntityType>
      <Annotations Target="Microsoft.NAV.customer/lastModifiedDateTime">
        <Annotation Term="Org.OData.Core.V1.Permissions"
            EnumMember="Org.OData.Core.V1.Permission/Read"/>
      </Annotations>
      <EntityContainer Name="NAV">
        <EntitySet Name="companies" EntityType="Microsoft.NAV.company"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>
"""


def test_bc_csdl_gives_the_contained_sets_with_types_lengths_enums_and_keys() -> None:
    tables = {t.entity_set: t for t in parse_csdl(BC_DOCUMENT, route="v2.0")}
    assert set(tables) == {"companies", "customers"}
    customers = tables["customers"]
    assert (customers.side, customers.name, customers.key) == ("bc", "customer", "id")
    assert customers.route == "v2.0" and not customers.custom
    assert customers.field("displayName") == FieldInfo("displayName", "Edm.String", 100)
    blocked = customers.field("blocked")
    assert blocked is not None and blocked.type == "Enum"
    assert blocked.enum == "Microsoft.NAV.customerBlocked"
    assert [o.value for o in blocked.options] == [" ", "Ship", "Invoice", "All"]
    identity = customers.field("id")
    assert identity is not None and identity.key and identity.read_only
    for computed in ("balanceDue", "lastModifiedDateTime"):
        found = customers.field(computed)
        assert found is not None and found.read_only, computed
    notes = customers.field("notes")
    assert notes is not None and notes.max_length is None
    assert customers.field("nosuch") is None


def test_bc_csdl_of_a_custom_route() -> None:
    tables = parse_csdl(BC_DOCUMENT, route="contoso/x/v1.0", custom=True)
    assert tables and all(t.custom and t.route == "contoso/x/v1.0" for t in tables)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("not xml <", "not XML"),
        ("<root/>", "not an edmx:Edmx"),
        (
            f'<edmx:Edmx xmlns:edmx="{EDMX}" Version="4.0"><edmx:DataServices>'
            f'<Schema xmlns="{EDM}" Namespace="N"><EntityContainer Name="C">'
            '<EntitySet Name="things" EntityType="N.thing"/></EntityContainer></Schema>'
            "</edmx:DataServices></edmx:Edmx>",
            "undeclared type N.thing",
        ),
    ],
)
def test_bc_csdl_that_is_not_a_metadata_document(document: str, reason: str) -> None:
    with pytest.raises(MetadataInvalid, match=reason):
        parse_csdl(document, route="v2.0")


def _encode(text: str) -> str:
    # XmlConvert.EncodeName for the characters the strategy draws.
    return "".join(
        c if c.isascii() and (c.isalpha() or (i and c.isdigit())) else f"_x{ord(c):04X}_"
        for i, c in enumerate(text)
    )


_WORDS = st.text(alphabet="abcdefghXYZ019 -.&é", min_size=1, max_size=12)


@given(_WORDS)
def test_xml_names_decode_to_the_text_encoded(text: str) -> None:
    assert decode_xml_name(_encode(text)) == text


_IDENT = st.from_regex(r"[a-z][A-Za-z0-9]{0,10}", fullmatch=True)
_PROPERTY = st.tuples(
    st.sampled_from(["Edm.String", "Edm.Int32", "Edm.Decimal", "Edm.Guid", "enum"]),
    st.one_of(st.none(), st.integers(1, 2048)),
    st.lists(_WORDS, min_size=1, max_size=5, unique=True),
)


@given(st.dictionaries(_IDENT, st.dictionaries(_IDENT, _PROPERTY, max_size=6), max_size=4))
def test_any_csdl_document_reads_back_what_it_declares(
    declared: dict[str, dict[str, tuple[str, int | None, list[str]]]],
) -> None:
    ET.register_namespace("edmx", EDMX)
    root = ET.Element(f"{{{EDMX}}}Edmx", {"Version": "4.0"})
    schema = ET.SubElement(
        ET.SubElement(root, f"{{{EDMX}}}DataServices"), f"{{{EDM}}}Schema", {"Namespace": "NS"}
    )
    container = ET.Element(f"{{{EDM}}}EntityContainer", {"Name": "C"})
    for type_name, properties in declared.items():
        entity = ET.SubElement(schema, f"{{{EDM}}}EntityType", {"Name": type_name})
        key = ET.SubElement(ET.SubElement(entity, f"{{{EDM}}}Key"), f"{{{EDM}}}PropertyRef")
        key.set("Name", "id")
        ET.SubElement(entity, f"{{{EDM}}}Property", {"Name": "id", "Type": "Edm.Guid"})
        for name, (kind, length, members) in properties.items():
            if name == "id":
                continue
            attrs = {"Name": name, "Type": kind}
            if kind == "enum":
                attrs["Type"] = f"NS.{type_name}_{name}"
                enum = ET.SubElement(schema, f"{{{EDM}}}EnumType", {"Name": f"{type_name}_{name}"})
                for member in members:
                    ET.SubElement(enum, f"{{{EDM}}}Member", {"Name": _encode(member)})
            elif kind == "Edm.String" and length is not None:
                attrs["MaxLength"] = str(length)
            ET.SubElement(entity, f"{{{EDM}}}Property", attrs)
        ET.SubElement(
            container,
            f"{{{EDM}}}EntitySet",
            {"Name": f"{type_name}Set", "EntityType": f"NS.{type_name}"},
        )
    schema.append(container)
    tables = {t.entity_set: t for t in parse_csdl(ET.tostring(root), route="r")}
    assert set(tables) == {f"{n}Set" for n in declared}
    for type_name, properties in declared.items():
        table = tables[f"{type_name}Set"]
        assert table.key == "id" and table.name == type_name
        assert [f.name for f in table.fields] == ["id", *(n for n in properties if n != "id")]
        for name, (kind, length, members) in properties.items():
            if name == "id":
                continue
            found = table.field(name)
            assert found is not None
            if kind == "enum":
                assert [o.value for o in found.options] == members
            else:
                assert found.type == kind and not found.options
                assert found.max_length == (length if kind == "Edm.String" else None)


# The shapes of "Query table definitions using the Web API": an EntityMetadata with its
# expanded Attributes, and what the typed casts add.
ACCOUNT: dict[str, Any] = {
    "@odata.context": "https://org.crm.dynamics.com/api/data/v9.2/$metadata#EntityDefinitions",
    "MetadataId": "70816501-edb9-4740-a16c-6a5efbc05d84",
    "LogicalName": "account",
    "EntitySetName": "accounts",
    "PrimaryIdAttribute": "accountid",
    "PrimaryNameAttribute": "name",
    "IsCustomEntity": False,
    "Attributes": [
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.UniqueIdentifierAttributeMetadata",
            "LogicalName": "accountid",
            "AttributeType": "Uniqueidentifier",
            "AttributeTypeName": {"Value": "UniqueidentifierType"},
            "RequiredLevel": {
                "Value": "SystemRequired",
                "CanBeChanged": False,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
            },
            "IsValidForCreate": True,
            "IsValidForUpdate": False,
            "IsCustomAttribute": False,
        },
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "LogicalName": "name",
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            "RequiredLevel": {"Value": "ApplicationRequired"},
            "IsValidForCreate": True,
            "IsValidForUpdate": True,
            "IsCustomAttribute": False,
            "MaxLength": 160,
        },
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            "LogicalName": "customertypecode",
            "AttributeType": "Picklist",
            "IsValidForCreate": True,
            "IsValidForUpdate": True,
            "OptionSet": {
                "Name": "account_customertypecode",
                "Options": [
                    {"Value": 1, "Label": {"UserLocalizedLabel": {"Label": "Competitor"}}},
                    {"Value": 3, "Label": {"UserLocalizedLabel": {"Label": "Customer"}}},
                ],
            },
            "GlobalOptionSet": None,
        },
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.MultiSelectPicklistAttributeMetadata",
            "LogicalName": "new_regions",
            "AttributeType": "Virtual",
            "AttributeTypeName": {"Value": "MultiSelectPicklistType"},
            "IsCustomAttribute": True,
            "GlobalOptionSet": {
                "Name": "new_region",
                "Options": [{"Value": 100000000, "Label": {"UserLocalizedLabel": None}}],
            },
        },
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            "LogicalName": "parentaccountid",
            "AttributeType": "Lookup",
            "Targets": ["account"],
            "IsValidForCreate": True,
            "IsValidForUpdate": True,
        },
        {
            "@odata.type": "#Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
            "LogicalName": "modifiedon",
            "AttributeType": "DateTime",
            "IsValidForCreate": False,
            "IsValidForUpdate": False,
        },
    ],
}


def test_dataverse_entity_definition_with_its_attributes() -> None:
    account = parse_entity_definition(ACCOUNT)
    assert (account.side, account.name, account.entity_set) == ("dataverse", "account", "accounts")
    assert (account.key, account.primary_name, account.custom) == ("accountid", "name", False)
    key = account.field("accountid")
    assert key is not None and key.key and key.required and key.creatable and not key.updatable
    assert not key.read_only
    name = account.field("name")
    assert name == FieldInfo("name", "String", 160, required=True)
    kind = account.field("customertypecode")
    assert kind is not None and kind.enum == "account_customertypecode"
    assert kind.options == (Option(1, "Competitor"), Option(3, "Customer"))
    assert kind.allows(3) and kind.allows("3") and not kind.allows(2)
    regions = account.field("new_regions")
    assert regions is not None and regions.type == "MultiSelectPicklist" and regions.custom
    assert regions.options == (Option(100000000, ""),) and regions.enum == "new_region"
    parent = account.field("parentaccountid")
    assert parent is not None and parent.targets == ("account",) and parent.type == "Lookup"
    modified = account.field("modifiedon")
    assert modified is not None and modified.read_only


def test_dataverse_definition_with_attributes_given_apart() -> None:
    listed = parse_entity_definition(
        {**ACCOUNT, "Attributes": None}, ACCOUNT["Attributes"][:2], detailed=False
    )
    assert [f.name for f in listed.fields] == ["accountid", "name"] and not listed.detailed
    with pytest.raises(MetadataInvalid, match="LogicalName"):
        parse_entity_definition({"EntitySetName": "accounts"})
    with pytest.raises(MetadataInvalid, match="LogicalName"):
        parse_attribute({"AttributeType": "String"})


def test_find_table_by_entity_set_then_name() -> None:
    tables = [
        TableInfo("dataverse", "account", "accounts", "accountid", ()),
        TableInfo("dataverse", "accounts", "odd", None, ()),
    ]
    assert find_table(tables, "accounts") is tables[0]
    assert find_table(tables, "account") is tables[0]
    assert find_table(tables, "odd") is tables[1]
    assert find_table(tables, "none") is None


# ---------------------------------------------------------------- the check

BC = TableInfo(
    "bc",
    "customer",
    "customers",
    "id",
    (
        FieldInfo("id", "Edm.Guid", creatable=False, updatable=False, key=True),
        FieldInfo("number", "Edm.String", 20),
        FieldInfo("displayName", "Edm.String", 100),
        FieldInfo(
            "blocked",
            "Enum",
            options=(Option(" ", " "), Option("Ship", "Ship"), Option("All", "All")),
        ),
        FieldInfo("balanceDue", "Edm.Decimal", creatable=False, updatable=False),
    ),
)
DV = TableInfo(
    "dataverse",
    "account",
    "accounts",
    "accountid",
    (
        FieldInfo("accountid", "Uniqueidentifier", key=True, updatable=False),
        FieldInfo("accountnumber", "String", 20),
        FieldInfo("name", "String", 160),
        FieldInfo("customertypecode", "Picklist", options=(Option(1, "a"), Option(3, "b"))),
        FieldInfo("modifiedon", "DateTime", creatable=False, updatable=False),
        FieldInfo("openedon", "DateTime", creatable=False, updatable=True),
    ),
)


def _mapping(*fields: FieldMapping, direction: Any = "bidirectional") -> TableMapping:
    return TableMapping("CUSTOMER", "customers", "accounts", direction, fields, bc_key="number")


def _messages(mapping: TableMapping, bc: TableInfo = BC, dv: TableInfo = DV) -> list[str]:
    return [str(p) for p in check_mapping(mapping, [bc], [dv])]


def test_a_mapping_the_metadata_agrees_with_has_no_problems() -> None:
    mapping = _mapping(
        FieldMapping("number", "accountnumber", transform=Transform(max_length=20)),
        FieldMapping("displayName", "name", transform=Transform(max_length=100)),
        FieldMapping("blocked", "customertypecode", transform=Transform(option_map=(("Ship", 3),))),
        FieldMapping("balanceDue", "name", direction="to_integration"),
        FieldMapping(None, "customertypecode", constant=3, has_constant=True, on_create_only=True),
    )
    assert _messages(mapping) == []


def test_each_disagreement_is_one_problem_naming_mapping_side_and_field() -> None:
    mapping = _mapping(
        FieldMapping("nosuch", "name"),
        FieldMapping("displayName", "name", transform=Transform(max_length=200)),
        FieldMapping("balanceDue", "accountnumber"),
        FieldMapping("number", "modifiedon", direction="to_integration"),
        FieldMapping(
            "blocked",
            "customertypecode",
            transform=Transform(option_map=(("Ship", 3), ("Nope", 2))),
        ),
        FieldMapping(None, "customertypecode", constant=7, has_constant=True),
        FieldMapping(None, "openedon", constant=None, has_constant=True, on_create_only=True),
    )
    assert _messages(mapping) == [
        "CUSTOMER: bc customers.nosuch: the service has no such field",
        "CUSTOMER: dataverse accounts.name: max_length 200 is larger than the column's 160",
        "CUSTOMER: bc customers.displayName: max_length 200 is larger than the column's 100",
        "CUSTOMER: bc customers.balanceDue: the column is read-only, and the mapping writes it",
        "CUSTOMER: dataverse accounts.modifiedon: the column is read-only, and the mapping "
        "writes it",
        "CUSTOMER: bc customers.blocked: option_map value 'Nope' is not one of its options "
        "(' ', 'Ship', 'All')",
        "CUSTOMER: dataverse accounts.customertypecode: option_map value 2 is not one of its "
        "options (1, 3)",
        "CUSTOMER: dataverse accounts.customertypecode: constant 7 is not one of its options",
        "CUSTOMER: dataverse accounts.openedon: the column cannot be set on create, and the "
        "mapping does",
    ]


def test_a_direction_the_mapping_does_not_run_is_not_checked() -> None:
    # Read-only BC balanceDue only flows to Dataverse in a to_integration mapping.
    mapping = _mapping(
        FieldMapping("balanceDue", "accountnumber"),
        FieldMapping("displayName", "name", transform=Transform(max_length=150)),
        direction="to_integration",
    )
    assert _messages(mapping) == []


def test_missing_tables_and_key_and_match_fields() -> None:
    mapping = replace(_mapping(FieldMapping("number", "accountnumber")), bc_key="code")
    assert _messages(mapping, dv=replace(DV, entity_set="other", name="other")) == [
        "CUSTOMER: dataverse accounts: the service has no such table",
        "CUSTOMER: bc customers.code: the service has no such field (bc_key)",
    ]


def test_the_default_mappings_against_tables_without_fields_name_every_field() -> None:
    _, mappings = load_mapping_file(default_mapping_file())
    for m in mappings.mappings:
        bc = TableInfo("bc", m.bc_table, m.bc_table, "id", ())
        dv = TableInfo("dataverse", m.dataverse_table, m.dataverse_table, None, ())
        problems = check_mapping(m, [bc], [dv])
        named = {(p.side, p.field) for p in problems}
        for f in m.fields:
            for side in ("bc", "dataverse"):
                name = f.name(side)  # type: ignore[arg-type]
                if name is not None:
                    assert (side, name) in named
        assert all(p.mapping == m.name and "no such field" in p.message for p in problems)


@given(
    st.lists(
        st.tuples(_IDENT, st.integers(1, 300), st.integers(1, 300)),
        min_size=1,
        max_size=8,
        unique_by=lambda t: t[0],
    )
)
def test_max_length_is_a_problem_exactly_where_it_exceeds_a_destination(
    columns: list[tuple[str, int, int]],
) -> None:
    bc = TableInfo(
        "bc", "t", "ts", None, tuple(FieldInfo(n, "Edm.String", length) for n, length, _ in columns)
    )
    dv = TableInfo(
        "dataverse",
        "d",
        "ds",
        None,
        tuple(FieldInfo(f"x{n}", "String", length) for n, length, _ in columns),
    )
    fields = tuple(
        FieldMapping(n, f"x{n}", transform=Transform(max_length=limit)) for n, _, limit in columns
    )
    mapping = TableMapping("M", "ts", "ds", "bidirectional", fields)
    flagged = {(p.side, p.field) for p in check_mapping(mapping, [bc], [dv])}
    expected = {("dataverse", f"x{n}") for n, length, limit in columns if limit > length} | {
        ("bc", n) for n, length, limit in columns if limit > length
    }
    assert flagged == expected
