"""Items, units of measure, payment terms and shipment methods on the BC emulator, and
products, units and unit groups on the Dataverse emulator, as Microsoft documents them:
BC API v2.0's ``items``, ``unitsOfMeasure``, ``paymentTerms`` and ``shipmentMethods``;
Dataverse's ``products``, ``uoms`` and ``uomschedules`` (a unit group creates its base
unit; a product needs a unit group and a default unit of it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from tests.emulators.conftest import BcEmulator, Emulator

pytestmark = pytest.mark.integration

EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


def _types(body: bytes) -> dict[str, ET.Element]:
    schema = ET.fromstring(body).find(f"{EDMX}DataServices/{EDM}Schema")
    assert schema is not None
    return {t.get("Name") or "": t for t in schema.findall(f"{EDM}EntityType")}


def _properties(entity_type: ET.Element) -> dict[str, str]:
    return {p.get("Name") or "": p.get("Type") or "" for p in entity_type.findall(f"{EDM}Property")}


# ---------------------------------------------------------------- BC


async def test_bc_metadata_has_the_new_entity_sets(bc: BcEmulator) -> None:
    response = await bc.client.get(f"{bc.api}/$metadata")
    types = _types(response.content)
    assert {"item", "unitOfMeasure", "paymentTerm", "shipmentMethod"} <= set(types)
    item = _properties(types["item"])
    assert item["baseUnitOfMeasureCode"] == "Edm.String"
    assert item["baseUnitOfMeasureId"] == "Edm.Guid"
    assert item["unitPrice"] == "Edm.Decimal"
    assert item["lastModifiedDateTime"] == "Edm.DateTimeOffset"
    terms = _properties(types["paymentTerm"])
    assert {"code", "displayName", "dueDateCalculation", "discountPercent"} <= set(terms)


async def test_an_item_names_its_base_unit_by_code_or_id(bc: BcEmulator) -> None:
    unit = await bc.client.post(bc.set_url("unitsOfMeasure"), json={"code": "PCS"})
    assert unit.status_code == 201, unit.text
    item = await bc.client.post(
        bc.set_url("items"), json={"displayName": "Bicycle", "baseUnitOfMeasureCode": "PCS"}
    )
    assert item.status_code == 201, item.text
    assert item.json()["baseUnitOfMeasureId"] == unit.json()["id"]
    # The number series numbers items as CRONUS does.
    assert item.json()["number"] == "0001"
    wrong = await bc.client.post(
        bc.set_url("items"), json={"displayName": "Wheel", "baseUnitOfMeasureCode": "BOX"}
    )
    assert wrong.status_code == 400
    assert "Unit of Measure" in wrong.json()["error"]["message"]
    # A unit's code is its key: a second PCS is refused.
    again = await bc.client.post(bc.set_url("unitsOfMeasure"), json={"code": "PCS"})
    assert again.status_code == 400, again.text


async def test_a_customer_payment_terms_id_must_name_payment_terms(bc: BcEmulator) -> None:
    terms = await bc.client.post(
        bc.set_url("paymentTerms"),
        json={"code": "30 DAYS", "displayName": "Net 30 days", "dueDateCalculation": "30D"},
    )
    assert terms.status_code == 201, terms.text
    good = await bc.client.post(
        bc.set_url("customers"), json={"displayName": "A", "paymentTermsId": terms.json()["id"]}
    )
    assert good.status_code == 201, good.text
    bad = await bc.client.post(
        bc.set_url("customers"),
        json={"displayName": "B", "paymentTermsId": "6f3b2b8e-0000-4000-8000-000000000001"},
    )
    assert bad.status_code == 400
    assert "Payment Terms" in bad.json()["error"]["message"]


# ---------------------------------------------------------------- Dataverse


async def _group(dv: Emulator, name: str) -> tuple[str, str]:
    """A new unit group and the base unit it came with."""
    created = await dv.client.post(
        f"{dv.api}/uomschedules",
        json={"name": name, "baseuomname": name.lower()},
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201, created.text
    group = created.json()["uomscheduleid"]
    units = await dv.client.get(
        f"{dv.api}/uoms", params={"$filter": f"_uomscheduleid_value eq {group}"}
    )
    (base,) = units.json()["value"]
    assert (base["name"], base["quantity"], base["isschedulebaseuom"]) == (name.lower(), 1, True)
    return group, base["uomid"]


async def test_a_unit_group_comes_with_its_base_unit(dv: Emulator) -> None:
    await _group(dv, "PCS")
    missing = await dv.client.post(f"{dv.api}/uomschedules", json={"name": "BOX"})
    assert missing.status_code == 400
    assert "baseuomname" in missing.json()["error"]["message"]


async def test_a_product_needs_a_unit_group_and_one_of_its_units(dv: Emulator) -> None:
    group, base = await _group(dv, "PCS")
    other_group, other_base = await _group(dv, "BOX")
    product = {"name": "Bicycle", "productnumber": "1000", "quantitydecimal": 0}
    no_group = await dv.client.post(f"{dv.api}/products", json=product)
    assert no_group.status_code == 400
    assert "defaultuomscheduleid" in no_group.json()["error"]["message"]
    grouped = {**product, "DefaultUoMScheduleId@odata.bind": f"/uomschedules({group})"}
    no_unit = await dv.client.post(f"{dv.api}/products", json=grouped)
    assert no_unit.status_code == 400
    assert "defaultuomid" in no_unit.json()["error"]["message"]
    foreign = await dv.client.post(
        f"{dv.api}/products", json={**grouped, "DefaultUoMId@odata.bind": f"/uoms({other_base})"}
    )
    assert foreign.status_code == 400, foreign.text
    made = await dv.client.post(
        f"{dv.api}/products",
        json={**grouped, "DefaultUoMId@odata.bind": f"/uoms({base})", "price": 120.5},
        headers={"Prefer": "return=representation"},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["_defaultuomscheduleid_value"] == group
    assert body["_defaultuomid_value"] == base
    assert body["price"] == 120.5
    moved = await dv.client.patch(
        f"{dv.api}/products({body['productid']})",
        json={"DefaultUoMScheduleId@odata.bind": f"/uomschedules({other_group})"},
    )
    assert moved.status_code == 400, moved.text


async def test_entity_definitions_of_product_and_units(dv: Emulator) -> None:
    for logical, entity_set, primary, ownership in (
        ("product", "products", "name", "OrganizationOwned"),
        ("uom", "uoms", "name", "None"),
        ("uomschedule", "uomschedules", "name", "OrganizationOwned"),
    ):
        found = await dv.client.get(f"{dv.api}/EntityDefinitions(LogicalName='{logical}')")
        assert found.status_code == 200, found.text
        body = found.json()
        assert (body["EntitySetName"], body["PrimaryNameAttribute"], body["OwnershipType"]) == (
            entity_set,
            primary,
            ownership,
        )
    response = await dv.client.get(f"{dv.api}/$metadata")
    product = _types(response.content)["product"]
    navigation = {n.get("Name") for n in product.findall(f"{EDM}NavigationProperty")}
    assert {"DefaultUoMScheduleId", "DefaultUoMId"} <= navigation
