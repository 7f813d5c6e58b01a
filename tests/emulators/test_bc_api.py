"""The BC API v2.0 requests of Microsoft's reference pages (dynamics_customer_*.md and
friends), sent to the emulator over HTTP."""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import datetime

import pytest

from tests.emulators.conftest import BcEmulator

pytestmark = pytest.mark.integration

ADATUM = {
    "displayName": "Adatum Corporation",
    "type": "Company",
    "addressLine1": "192 Market Square",
    "addressLine2": "",
    "city": "Atlanta",
    "state": "GA",
    "country": "US",
    "postalCode": "31772",
    "phoneNumber": "",
    "email": "robert.townes@contoso.com",
    "website": "",
    "taxLiable": True,
    "taxRegistrationNumber": "",
    "currencyCode": "USD",
    "blocked": " ",
}


async def _create(bc: BcEmulator, entity_set: str, body: dict[str, object]) -> dict[str, object]:
    response = await bc.client.post(bc.set_url(entity_set), json=body)
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


async def test_companies_lists_cronus(bc: BcEmulator) -> None:
    response = await bc.client.get(f"{bc.api}/companies")
    assert response.status_code == 200
    (company,) = response.json()["value"]
    assert company["name"] == "CRONUS USA, Inc."
    single = await bc.client.get(f"{bc.api}/companies({company['id']})")
    assert single.json()["displayName"] == "CRONUS USA, Inc."


async def test_create_customer_answers_201_with_the_record(bc: BcEmulator) -> None:
    response = await bc.client.post(bc.set_url("customers"), json=ADATUM)
    assert response.status_code == 201
    body = response.json()
    assert body["displayName"] == "Adatum Corporation"
    assert body["number"] == "C00001"  # from the number series
    assert body["currencyId"] == "00000000-0000-0000-0000-000000000000"
    assert body["balanceDue"] == 0
    assert re.fullmatch(r'W/"[A-Za-z0-9+/=]+"', body["@odata.etag"])
    assert base64.b64decode(body["@odata.etag"][3:-1]).startswith(b"'")
    stamp = body["lastModifiedDateTime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    assert response.headers["etag"] == body["@odata.etag"]
    assert response.headers["location"].endswith(f"customers({body['id']})")
    assert set(body) >= {
        "id",
        "number",
        "type",
        "salespersonCode",
        "taxAreaId",
        "paymentTermsId",
        "shipmentMethodId",
        "paymentMethodId",
    }


async def test_get_customer_by_id(bc: BcEmulator) -> None:
    created = await _create(bc, "customers", ADATUM)
    response = await bc.client.get(bc.set_url("customers", str(created["id"])))
    assert response.status_code == 200
    assert response.json()["email"] == "robert.townes@contoso.com"
    missing = await bc.client.get(bc.set_url("customers", "f2a5738a-44e3-ea11-bb43-000d3a2feca1"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "Internal_RecordNotFound"


async def test_list_with_filter_and_select(bc: BcEmulator) -> None:
    await _create(bc, "customers", ADATUM)
    await _create(bc, "customers", {"displayName": "Trey Research", "city": "Chicago"})
    response = await bc.client.get(
        bc.set_url("customers"),
        params={"$filter": "city eq 'Atlanta'", "$select": "number,displayName"},
    )
    assert response.status_code == 200
    (row,) = response.json()["value"]
    assert set(row) == {"@odata.etag", "number", "displayName", "id"}
    assert row["displayName"] == "Adatum Corporation"


async def test_update_with_if_match_answers_200(bc: BcEmulator) -> None:
    created = await _create(bc, "customers", ADATUM)
    url = bc.set_url("customers", str(created["id"]))
    response = await bc.client.patch(
        url,
        json={"displayName": "Coho Winery Inc.", "phoneNumber": "(555) 555-1234"},
        headers={"If-Match": str(created["@odata.etag"])},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["displayName"] == "Coho Winery Inc."
    assert body["@odata.etag"] != created["@odata.etag"]
    assert body["lastModifiedDateTime"] >= str(created["lastModifiedDateTime"])


async def test_update_with_stale_etag_is_a_conflict(bc: BcEmulator) -> None:
    created = await _create(bc, "customers", ADATUM)
    url = bc.set_url("customers", str(created["id"]))
    etag = str(created["@odata.etag"])
    first = await bc.client.patch(url, json={"city": "Miami"}, headers={"If-Match": etag})
    assert first.status_code == 200
    stale = await bc.client.patch(url, json={"city": "Boston"}, headers={"If-Match": etag})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "Request_EntityChanged"
    assert "Another user has already changed the record." in stale.json()["error"]["message"]
    current = await bc.client.get(url)
    assert current.json()["city"] == "Miami"


async def test_update_and_delete_require_if_match(bc: BcEmulator) -> None:
    created = await _create(bc, "customers", ADATUM)
    url = bc.set_url("customers", str(created["id"]))
    patch = await bc.client.patch(url, json={"city": "Miami"})
    assert patch.status_code == 400
    assert patch.json()["error"]["code"] == "BadRequest_InvalidToken"
    delete = await bc.client.delete(url)
    assert delete.status_code == 400
    star = await bc.client.patch(url, json={"city": "Miami"}, headers={"If-Match": "*"})
    assert star.status_code == 200


async def test_delete_customer_answers_204(bc: BcEmulator) -> None:
    created = await _create(bc, "customers", ADATUM)
    url = bc.set_url("customers", str(created["id"]))
    response = await bc.client.delete(url, headers={"If-Match": str(created["@odata.etag"])})
    assert response.status_code == 204
    assert response.content == b""
    assert (await bc.client.get(url)).status_code == 404
    again = await bc.client.delete(url, headers={"If-Match": "*"})
    assert again.status_code == 404


async def test_id_is_read_only(bc: BcEmulator) -> None:
    response = await bc.client.post(
        bc.set_url("customers"), json={"id": "f2a5738a-44e3-ea11-bb43-000d3a2feca1", **ADATUM}
    )
    assert response.status_code == 400
    assert "'id'" in response.json()["error"]["message"]
    stamp = await bc.client.post(
        bc.set_url("customers"), json={"lastModifiedDateTime": "2020-08-21T07:38:44.293Z"}
    )
    assert stamp.status_code == 400


async def test_duplicate_number_is_refused_with_bc_message(bc: BcEmulator) -> None:
    await _create(bc, "customers", {"number": "10000", "displayName": "Adatum"})
    response = await bc.client.post(
        bc.set_url("customers"), json={"number": "10000", "displayName": "Again"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "Internal_EntityWithSameKeyExists"
    assert "already exists" in error["message"] and "No.='10000'" in error["message"]


async def test_number_series_numbers_new_records(bc: BcEmulator) -> None:
    numbers = [
        (await _create(bc, "customers", {"displayName": f"C{i}"}))["number"] for i in range(3)
    ]
    assert numbers == ["C00001", "C00002", "C00003"]
    vendor = await _create(bc, "vendors", {"displayName": "Fabrikam, Inc."})
    assert vendor["number"] == "V00001"


async def test_a_blank_number_is_left_to_the_number_series(bc: BcEmulator) -> None:
    # A sync creating a customer from an account without a number sends "".
    created = await _create(bc, "customers", {"number": "", "displayName": "Northwind"})
    assert created["number"] == "C00001"


async def test_currency_code_must_name_a_currency(bc: BcEmulator) -> None:
    euro = await _create(bc, "currencies", {"code": "EUR", "displayName": "Euro", "symbol": "€"})
    customer = await _create(bc, "customers", {"displayName": "Trey", "currencyCode": "EUR"})
    assert customer["currencyId"] == euro["id"]
    bad = await bc.client.post(bc.set_url("customers"), json={"currencyCode": "XYZ"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "Internal_InvalidTableRelation"
    assert "(XYZ)" in bad.json()["error"]["message"]


async def test_salespeople_custom_api_assigns_codes(bc: BcEmulator) -> None:
    custom = f"{bc.url}/BC/api/tablesync/integration/v1.0/companies({bc.company})/salespeople"
    first = await bc.client.post(
        custom, json={"name": "Annette Hill", "email": "ah@cronus.example"}
    )
    second = await bc.client.post(custom, json={"name": "Jim Glynn"})
    assert first.status_code == second.status_code == 201
    assert [first.json()["code"], second.json()["code"]] == ["SP00001", "SP00002"]
    standard = await bc.client.get(bc.set_url("salespeople"))
    assert standard.status_code == 404
    customer = await _create(bc, "customers", {"displayName": "X", "salespersonCode": "SP00002"})
    assert customer["salespersonCode"] == "SP00002"
    unknown = await bc.client.post(bc.set_url("customers"), json={"salespersonCode": "SP00009"})
    assert unknown.status_code == 400


async def test_person_contact_names_its_customer(bc: BcEmulator) -> None:
    customer = await _create(bc, "customers", ADATUM)
    contact = await _create(
        bc,
        "contacts",
        {"displayName": "Robert Townes", "companyNumber": customer["number"], "type": "Person"},
    )
    assert contact["companyName"] == "Adatum Corporation"
    assert contact["contactBusinessRelation"] == "Customer"
    assert contact["searchName"] == "ROBERT TOWNES"
    assert contact["number"] == "CT000001"
    assert contact["lastInteractionDate"] == "0001-01-01"


async def test_enum_and_length_are_checked(bc: BcEmulator) -> None:
    bad_enum = await bc.client.post(bc.set_url("customers"), json={"blocked": "Nope"})
    assert bad_enum.status_code == 400
    assert "is not an option" in bad_enum.json()["error"]["message"]
    too_long = await bc.client.post(bc.set_url("customers"), json={"city": "x" * 31})
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "Application_StringExceededLength"


async def test_return_minimal_and_if_none_match(bc: BcEmulator) -> None:
    response = await bc.client.post(
        bc.set_url("customers"), json=ADATUM, headers={"Prefer": "return=minimal"}
    )
    assert response.status_code == 204
    assert response.headers["location"]
    key = response.headers["location"].rsplit("(", 1)[1].rstrip(")")
    current = await bc.client.get(bc.set_url("customers", key))
    etag = current.headers["etag"]
    not_modified = await bc.client.get(
        bc.set_url("customers", key), headers={"If-None-Match": etag}
    )
    assert not_modified.status_code == 304


async def test_count_and_dollar_count(bc: BcEmulator) -> None:
    for i in range(3):
        await _create(bc, "vendors", {"displayName": f"V{i}"})
    response = await bc.client.get(bc.set_url("vendors"), params={"$count": "true", "$top": "1"})
    assert response.json()["@odata.count"] == 3
    assert len(response.json()["value"]) == 1
    text = await bc.client.get(bc.set_url("vendors") + "/$count")
    assert text.text == "3"


async def test_wrong_company_and_unknown_segment(bc: BcEmulator) -> None:
    other = await bc.client.get(
        f"{bc.api}/companies(00000000-0000-0000-0000-000000000001)/customers"
    )
    assert other.status_code == 404
    unknown = await bc.client.get(f"{bc.api}/companies({bc.company})/journals")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "BadRequest_ResourceNotFound"


async def test_last_modified_is_millisecond_server_time(bc: BcEmulator) -> None:
    before = datetime.now().astimezone()
    created = await _create(bc, "currencies", {"code": "GBP"})
    stamp = datetime.fromisoformat(str(created["lastModifiedDateTime"]).replace("Z", "+00:00"))
    assert abs((stamp - before).total_seconds()) < 60
    assert stamp.microsecond % 1000 == 0


async def test_concurrent_creates_get_distinct_numbers(bc: BcEmulator) -> None:
    async def create(i: int) -> str:
        response = await bc.client.post(bc.set_url("customers"), json={"displayName": f"P{i}"})
        assert response.status_code == 201, response.text
        return str(response.json()["number"])

    numbers = await asyncio.gather(*(create(i) for i in range(15)))
    assert sorted(numbers) == [f"C{i:05d}" for i in range(1, 16)]
