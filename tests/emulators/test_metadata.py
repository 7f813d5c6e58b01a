"""Metadata as Microsoft documents it, read by a client that knows only the documentation:
BC's ``$metadata`` and ``$skip``; Dataverse's ``$metadata``, ``EntityDefinitions`` and
``GlobalOptionSetDefinitions``."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emulators.conftest import CLIENT_TIMEOUT_S, TOKEN, BcEmulator, Emulator

pytestmark = pytest.mark.integration

EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
CRM = "Microsoft.Dynamics.CRM"


def _schema(body: bytes) -> ET.Element:
    root = ET.fromstring(body)
    assert root.tag == f"{EDMX}Edmx" and root.get("Version") == "4.0"
    schema = root.find(f"{EDMX}DataServices/{EDM}Schema")
    assert schema is not None
    return schema


def _entity_type(schema: ET.Element, name: str) -> ET.Element:
    found = schema.find(f"{EDM}EntityType[@Name='{name}']")
    assert found is not None, name
    return found


def _property(entity_type: ET.Element, name: str) -> ET.Element:
    found = entity_type.find(f"{EDM}Property[@Name='{name}']")
    assert found is not None, name
    return found


# ---------------------------------------------------------------- BC


async def test_bc_metadata_describes_the_entity_sets_it_serves(bc: BcEmulator) -> None:
    response = await bc.client.get(f"{bc.api}/$metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    schema = _schema(response.content)
    assert schema.get("Namespace") == "Microsoft.NAV"
    container = schema.find(f"{EDM}EntityContainer")
    assert container is not None
    sets = {s.get("Name"): s.get("EntityType") for s in container.findall(f"{EDM}EntitySet")}
    assert sets["customers"] == "Microsoft.NAV.customer"
    assert sets["companies"] == "Microsoft.NAV.company"
    # salespeople is a custom page on its own route, not part of v2.0.
    assert "salespeople" not in sets
    customer = _entity_type(schema, "customer")
    key = customer.find(f"{EDM}Key/{EDM}PropertyRef")
    assert key is not None and key.get("Name") == "id"
    assert _property(customer, "id").get("Type") == "Edm.Guid"
    display = _property(customer, "displayName")
    assert display.get("Type") == "Edm.String" and display.get("MaxLength") == "100"
    assert _property(customer, "creditLimit").get("Type") == "Edm.Decimal"
    assert _property(customer, "lastModifiedDateTime").get("Type") == "Edm.DateTimeOffset"
    assert _property(customer, "taxLiable").get("Type") == "Edm.Boolean"
    contact = _entity_type(schema, "contact")
    assert _property(contact, "lastInteractionDate").get("Type") == "Edm.Date"
    blocked = _property(customer, "blocked").get("Type")
    enum = schema.find(f"{EDM}EnumType[@Name='{(blocked or '').split('.')[-1]}']")
    assert enum is not None
    members = [m.get("Name") for m in enum.findall(f"{EDM}Member")]
    assert members == ["_x0020_", "Ship", "Invoice", "All"]
    company = _entity_type(schema, "company")
    navigation = company.find(f"{EDM}NavigationProperty[@Name='customers']")
    assert navigation is not None and navigation.get("ContainsTarget") == "true"


async def test_bc_metadata_of_the_custom_route_has_its_own_sets(bc: BcEmulator) -> None:
    response = await bc.client.get(f"{bc.url}/BC/api/tablesync/integration/v1.0/$metadata")
    schema = _schema(response.content)
    salesperson = _entity_type(schema, "salesperson")
    assert _property(salesperson, "code").get("MaxLength") == "20"
    assert schema.find(f"{EDM}EntityType[@Name='customer']") is None


async def test_bc_metadata_refuses_query_options_bc_does_not_document(bc: BcEmulator) -> None:
    response = await bc.client.get(f"{bc.api}/$metadata", params={"$format": "json"})
    assert response.status_code == 400
    assert "$format" in response.json()["error"]["message"]


async def test_bc_pages_with_top_and_skip_in_orderby_order(bc: BcEmulator) -> None:
    for index in range(7):
        created = await bc.client.post(
            bc.set_url("vendors"), json={"displayName": f"Vendor {index}"}
        )
        assert created.status_code == 201, created.text
    url = bc.set_url("vendors")
    order = {"$orderby": "displayName desc", "$select": "displayName"}
    names = []
    for skip in (0, 3, 6):
        page = await bc.client.get(url, params={**order, "$top": "3", "$skip": str(skip)})
        assert page.status_code == 200, page.text
        names.extend(r["displayName"] for r in page.json()["value"])
    assert names == [f"Vendor {i}" for i in range(6, -1, -1)]
    # $skip with server-driven paging: the next link goes on after the skipped rows.
    first = await bc.client.get(
        url, params={**order, "$skip": "2"}, headers={"Prefer": "odata.maxpagesize=2"}
    )
    body = first.json()
    seen = [r["displayName"] for r in body["value"]]
    while "@odata.nextLink" in body:
        body = (await bc.client.get(body["@odata.nextLink"])).json()
        seen.extend(r["displayName"] for r in body["value"])
    assert seen == [f"Vendor {i}" for i in range(4, -1, -1)]
    counted = await bc.client.get(url, params={"$skip": "5", "$top": "1", "$count": "true"})
    assert counted.json()["@odata.count"] == 7
    assert len(counted.json()["value"]) == 1
    bad = await bc.client.get(url, params={"$skip": "-1"})
    assert bad.status_code == 400
    assert "$skip" in bad.json()["error"]["message"]


async def test_random_top_skip_and_page_size_give_the_slice_of_the_order(bc: BcEmulator) -> None:
    # Ties on the city make the key the tie-breaker the pages must also agree on.
    for index in range(9):
        body = {"displayName": f"Vendor {index}", "city": "Atlanta" if index % 3 else "Boston"}
        assert (await bc.client.post(bc.set_url("vendors"), json=body)).status_code == 201
    url = bc.set_url("vendors")

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        order=st.sampled_from(["displayName", "displayName desc", "city,displayName desc", "city"]),
        top=st.one_of(st.none(), st.integers(0, 10)),
        skip=st.integers(0, 11),
        page_size=st.one_of(st.none(), st.integers(1, 4)),
    )
    def check(order: str, top: int | None, skip: int, page_size: int | None) -> None:
        with httpx.Client(
            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=CLIENT_TIMEOUT_S
        ) as client:
            everything = client.get(url, params={"$orderby": order}).json()["value"]
            params = {"$orderby": order, "$skip": str(skip)}
            if top is not None:
                params["$top"] = str(top)
            headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else {}
            body = client.get(url, params=params, headers=headers).json()
            got = list(body["value"])
            while "@odata.nextLink" in body:
                body = client.get(body["@odata.nextLink"], headers=headers).json()
                got.extend(body["value"])
        end = None if top is None else skip + top
        assert [r["id"] for r in got] == [r["id"] for r in everything[skip:end]]

    # The server runs on this event loop: drive hypothesis from a thread.
    await asyncio.to_thread(check)


# ---------------------------------------------------------------- Dataverse


async def test_dataverse_metadata_document(dv: Emulator) -> None:
    response = await dv.client.get(f"{dv.api}/$metadata")
    assert response.status_code == 200
    schema = _schema(response.content)
    assert schema.get("Namespace") == CRM
    account = _entity_type(schema, "account")
    key = account.find(f"{EDM}Key/{EDM}PropertyRef")
    assert key is not None and key.get("Name") == "accountid"
    assert _property(account, "name").get("MaxLength") == "160"
    contact = account.find(f"{EDM}NavigationProperty[@Name='primarycontactid']")
    assert contact is not None and contact.get("Type") == f"{CRM}.contact"
    container = schema.find(f"{EDM}EntityContainer")
    assert container is not None
    names = {s.get("Name") for s in container.findall(f"{EDM}EntitySet")}
    assert {"accounts", "contacts", "EntityDefinitions", "GlobalOptionSetDefinitions"} <= names


async def test_entity_definition_by_logical_name(dv: Emulator) -> None:
    url = f"{dv.api}/EntityDefinitions(LogicalName='account')"
    response = await dv.client.get(url)
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["@odata.context"].endswith("$metadata#EntityDefinitions/$entity")
    assert account["LogicalName"] == "account"
    assert account["EntitySetName"] == "accounts"
    assert account["SchemaName"] == "Account"
    assert account["PrimaryIdAttribute"] == "accountid"
    assert account["PrimaryNameAttribute"] == "name"
    assert account["IsCustomEntity"] is False
    assert account["DisplayName"]["UserLocalizedLabel"]["Label"] == "Account"
    by_id = await dv.client.get(f"{dv.api}/EntityDefinitions({account['MetadataId']})")
    assert by_id.json()["LogicalName"] == "account"
    selected = await dv.client.get(url, params={"$select": "LogicalName,EntitySetName"})
    assert set(selected.json()) == {"@odata.context", "LogicalName", "EntitySetName", "MetadataId"}


async def test_entity_definitions_filtered_with_expanded_attributes(dv: Emulator) -> None:
    response = await dv.client.get(
        f"{dv.api}/EntityDefinitions",
        params={
            "$select": "LogicalName,EntitySetName",
            "$filter": "EntitySetName eq 'contacts' or LogicalName eq 'account'",
            "$expand": (
                "Attributes($select=LogicalName,AttributeType;$filter=IsValidForCreate eq true)"
            ),
        },
    )
    assert response.status_code == 200, response.text
    tables = {t["LogicalName"]: t for t in response.json()["value"]}
    assert set(tables) == {"account", "contact"}
    attributes = {a["LogicalName"]: a for a in tables["account"]["Attributes"]}
    assert attributes["name"]["AttributeType"] == "String"
    assert attributes["primarycontactid"]["AttributeType"] == "Lookup"
    assert attributes["ownerid"]["AttributeType"] == "Owner"
    assert "createdon" not in attributes and "versionnumber" not in attributes
    assert set(attributes["name"]) == {"@odata.type", "MetadataId", "LogicalName", "AttributeType"}


async def test_attributes_of_account(dv: Emulator) -> None:
    base = f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes"
    listed = await dv.client.get(base)
    assert listed.status_code == 200
    attributes = {a["LogicalName"]: a for a in listed.json()["value"]}
    assert "_primarycontactid_value" not in attributes
    name = attributes["name"]
    assert name["@odata.type"] == f"#{CRM}.StringAttributeMetadata"
    assert name["AttributeTypeName"] == {"Value": "StringType"}
    assert name["MaxLength"] == 160
    assert name["IsPrimaryName"] is True
    assert name["RequiredLevel"]["Value"] == "None"
    key = attributes["accountid"]
    assert key["IsPrimaryId"] is True and key["IsValidForUpdate"] is False
    modified = attributes["modifiedon"]
    assert modified["IsValidForCreate"] is False and modified["IsValidForRead"] is True
    single = await dv.client.get(f"{base}(LogicalName='name')")
    assert single.json()["MetadataId"] == name["MetadataId"]
    strings = await dv.client.get(
        f"{base}/{CRM}.StringAttributeMetadata", params={"$select": "LogicalName,MaxLength"}
    )
    lengths = {a["LogicalName"]: a["MaxLength"] for a in strings.json()["value"]}
    assert lengths["accountnumber"] == 20 and "creditlimit" not in lengths
    lookups = await dv.client.get(
        f"{base}/{CRM}.LookupAttributeMetadata", params={"$select": "LogicalName,Targets"}
    )
    targets = {a["LogicalName"]: a["Targets"] for a in lookups.json()["value"]}
    assert targets["primarycontactid"] == ["contact"]
    assert targets["transactioncurrencyid"] == ["transactioncurrency"]
    customer = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='parentcustomerid')"
    )
    assert customer.json()["AttributeType"] == "Customer"
    assert customer.json()["Targets"] == ["account", "contact"]


async def test_picklist_metadata_of_account(dv: Emulator) -> None:
    url = (
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes/"
        f"{CRM}.PicklistAttributeMetadata"
    )
    response = await dv.client.get(
        url, params={"$select": "LogicalName", "$expand": "OptionSet,GlobalOptionSet"}
    )
    assert response.status_code == 200, response.text
    picklists = {a["LogicalName"]: a for a in response.json()["value"]}
    assert set(picklists) == {
        "customertypecode",
        "paymenttermscode",
        "address1_freighttermscode",
        "address1_shippingmethodcode",
    }
    code = picklists["customertypecode"]
    assert code["GlobalOptionSet"] is None
    options = {
        o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in code["OptionSet"]["Options"]
    }
    assert options[3] == "Customer" and options[11] == "Vendor"

    def labels(name: str) -> dict[int, str]:
        return {
            o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"]
            for o in picklists[name]["OptionSet"]["Options"]
        }

    # The options BC's Payment Terms, Shipment Method and Shipping Agent map to.
    assert labels("paymenttermscode") == {
        1: "Net 30",
        2: "2% 10, Net 30",
        3: "Net 45",
        4: "Net 60",
    }
    assert labels("address1_freighttermscode") == {1: "FOB", 2: "No Charge"}
    assert labels("address1_shippingmethodcode")[7] == "Will Call"
    first = code["OptionSet"]["Options"][0]["Label"]["LocalizedLabels"][0]
    assert first["LanguageCode"] == 1033
    state = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='statecode')/"
        f"{CRM}.StateAttributeMetadata",
        params={"$expand": "OptionSet"},
    )
    assert [o["Value"] for o in state.json()["OptionSet"]["Options"]] == [0, 1]


async def test_definition_errors_are_the_documented_ones(dv: Emulator) -> None:
    unknown = await dv.client.get(f"{dv.api}/EntityDefinitions(LogicalName='lead')")
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["code"] == "0x80041102"
    assert "'lead'" in error["message"] and "MetadataCache" in error["message"]
    attribute = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='nope')"
    )
    assert attribute.status_code == 404
    bad_select = await dv.client.get(
        f"{dv.api}/EntityDefinitions", params={"$select": "LogicalName,Bogus"}
    )
    assert bad_select.status_code == 400
    assert "Bogus" in bad_select.json()["error"]["message"]
    bad_key = await dv.client.get(f"{dv.api}/EntityDefinitions(Name='account')")
    assert bad_key.status_code == 400
    wrong_cast = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes(LogicalName='name')/"
        f"{CRM}.PicklistAttributeMetadata"
    )
    assert wrong_cast.status_code == 404
    no_option_set = await dv.client.get(
        f"{dv.api}/EntityDefinitions(LogicalName='account')/Attributes",
        params={"$expand": "OptionSet"},
    )
    assert no_option_set.status_code == 400
    write = await dv.client.post(f"{dv.api}/EntityDefinitions", json={})
    assert write.status_code == 501


async def test_change_tracking_flag_follows_the_tables_setting(dv: Emulator) -> None:
    url = f"{dv.api}/EntityDefinitions(LogicalName='contact')"
    assert (await dv.client.get(url)).json()["ChangeTrackingEnabled"] is True
    await dv.configure(change_tracking={"contacts": False})
    try:
        assert (await dv.client.get(url)).json()["ChangeTrackingEnabled"] is False
    finally:
        await dv.configure(change_tracking={"contacts": True})
