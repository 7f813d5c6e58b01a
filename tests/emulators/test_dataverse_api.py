"""The Dataverse Web API requests of Microsoft's docs (create, retrieve, update, upsert,
associate, conditional operations, impersonation), sent to the emulator over HTTP."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg
import pytest

from tests.emulators.conftest import Emulator

pytestmark = pytest.mark.integration

REPRESENTATION = {"Prefer": "return=representation"}


async def _post(dv: Emulator, entity_set: str, body: dict[str, object]) -> dict[str, Any]:
    response = await dv.client.post(f"{dv.api}/{entity_set}", json=body, headers=REPRESENTATION)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _usd(dv: Emulator) -> dict[str, Any]:
    return await _post(
        dv,
        "transactioncurrencies",
        {
            "isocurrencycode": "USD",
            "currencyname": "US Dollar",
            "currencysymbol": "$",
            "exchangerate": 1.0,
        },
    )


async def _user(dv: Emulator, first: str, last: str, **extra: object) -> str:
    user = await _post(dv, "systemusers", {"firstname": first, "lastname": last, **extra})
    return str(user["systemuserid"])


async def _integration_user(dv: Emulator) -> str:
    who = await dv.client.get(f"{dv.api}/WhoAmI")
    return str(who.json()["UserId"])


async def test_basic_create_answers_204_with_entity_id(dv: Emulator) -> None:
    response = await dv.client.post(
        f"{dv.api}/accounts",
        json={
            "name": "Sample Account",
            "creditlimit": 5000000,
            "description": "This is the description of the sample account",
        },
    )
    assert response.status_code == 204
    entity_id = response.headers["odata-entityid"]
    assert re.fullmatch(rf"{re.escape(dv.api)}/accounts\([0-9a-f-]{{36}}\)", entity_id)
    row = await dv.client.get(entity_id)
    assert row.status_code == 200
    body = row.json()
    assert body["name"] == "Sample Account"
    assert body["@odata.etag"] == f'W/"{body["versionnumber"]}"'
    assert body["_ownerid_value"] == await _integration_user(dv)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["modifiedon"])


async def test_create_with_data_returned(dv: Emulator) -> None:
    response = await dv.client.post(
        f"{dv.api}/accounts?$select=name,creditlimit,createdon",
        json={"name": "Sample Account", "creditlimit": 5000},
        headers=REPRESENTATION,
    )
    assert response.status_code == 201
    assert response.headers["preference-applied"] == "return=representation"
    body = response.json()
    assert set(body) == {
        "@odata.context",
        "@odata.etag",
        "name",
        "creditlimit",
        "createdon",
        "accountid",
    }
    assert body["@odata.context"].endswith("$metadata#accounts(name,creditlimit,createdon)/$entity")


async def test_primary_key_may_be_given(dv: Emulator) -> None:
    key = "00000000-0000-0000-0000-000000000001"
    created = await _post(dv, "accounts", {"accountid": key, "name": "Fixed"})
    assert created["accountid"] == key
    again = await dv.client.post(f"{dv.api}/accounts", json={"accountid": key, "name": "Twice"})
    assert again.status_code == 412
    assert again.json()["error"]["code"] == "0x80040237"


async def test_bind_lookup_and_read_it_back_with_annotations(dv: Emulator) -> None:
    owner = await _user(dv, "Annette", "Hill")
    await _usd(dv)
    contact = await _post(dv, "contacts", {"firstname": "Yvonne", "lastname": "McKay"})
    assert contact["fullname"] == "Yvonne McKay"
    account = await _post(
        dv,
        "accounts",
        {
            "name": "Sample Account",
            "ownerid@odata.bind": f"/systemusers({owner})",
            "primarycontactid@odata.bind": f"/contacts({contact['contactid']})",
        },
    )
    assert account["_ownerid_value"] == owner
    assert account["_primarycontactid_value"] == contact["contactid"]
    assert account["_transactioncurrencyid_value"] is not None  # the base currency
    response = await dv.client.get(
        f"{dv.api}/accounts",
        params={"$select": "name,_ownerid_value"},
        headers={"Prefer": 'odata.include-annotations="*"'},
    )
    (row,) = response.json()["value"]
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == "ownerid"
    assert "odata.include-annotations" in response.headers["preference-applied"]


async def test_polymorphic_parentcustomerid(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Adatum"})
    boss = await _post(dv, "contacts", {"lastname": "Boss"})
    by_account = await _post(
        dv,
        "contacts",
        {
            "lastname": "A",
            "parentcustomerid_account@odata.bind": f"accounts({account['accountid']})",
        },
    )
    by_contact = await _post(
        dv,
        "contacts",
        {"lastname": "B", "parentcustomerid_contact@odata.bind": f"/contacts({boss['contactid']})"},
    )
    assert by_account["_parentcustomerid_value"] == account["accountid"]
    assert by_contact["_parentcustomerid_value"] == boss["contactid"]
    response = await dv.client.get(
        f"{dv.api}/contacts({by_contact['contactid']})",
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
    )
    assert (
        response.json()["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]
        == "contact"
    )
    wrong = await dv.client.post(
        f"{dv.api}/contacts",
        json={"parentcustomerid_account@odata.bind": f"/contacts({boss['contactid']})"},
    )
    assert wrong.status_code == 400


async def test_bind_to_missing_record_is_object_does_not_exist(dv: Emulator) -> None:
    missing = "00000000-0000-0000-0000-0000000000aa"
    response = await dv.client.post(
        f"{dv.api}/accounts", json={"name": "x", "ownerid@odata.bind": f"/systemusers({missing})"}
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "0x80040217"
    assert error["message"] == f"systemuser With Id = {missing} Does Not Exist"


async def test_clear_lookup_three_documented_ways(dv: Emulator) -> None:
    contact = await _post(dv, "contacts", {"lastname": "Primary"})
    bind = {"primarycontactid@odata.bind": f"/contacts({contact['contactid']})"}
    account = await _post(dv, "accounts", {"name": "A", **bind})
    url = f"{dv.api}/accounts({account['accountid']})"

    async def primary() -> object:
        return (await dv.client.get(url)).json()["_primarycontactid_value"]

    assert (await dv.client.delete(f"{url}/primarycontactid/$ref")).status_code == 204
    assert await primary() is None
    await dv.client.patch(url, json=bind)
    assert await primary() == contact["contactid"]
    assert (
        await dv.client.patch(url, json={"primarycontactid@odata.bind": None})
    ).status_code == 204
    assert await primary() is None
    await dv.client.patch(url, json=bind)
    assert (await dv.client.patch(url, json={"primarycontactid": None})).status_code == 204
    assert await primary() is None
    put = await dv.client.put(
        f"{url}/primarycontactid/$ref", json={"@odata.id": f"contacts({contact['contactid']})"}
    )
    assert put.status_code == 204
    assert await primary() == contact["contactid"]


async def test_lookup_value_property_is_not_writable(dv: Emulator) -> None:
    owner = await _integration_user(dv)
    response = await dv.client.post(f"{dv.api}/accounts", json={"_ownerid_value": owner})
    assert response.status_code == 400
    assert "Navigation properties" in response.json()["error"]["message"]


async def test_update_answers_204_and_with_representation_200(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Sample"})
    url = f"{dv.api}/accounts({account['accountid']})"
    plain = await dv.client.patch(url, json={"name": "Updated"}, headers={"If-Match": "*"})
    assert plain.status_code == 204
    shown = await dv.client.patch(
        url + "?$select=name", json={"name": "Again"}, headers={"If-Match": "*", **REPRESENTATION}
    )
    assert shown.status_code == 200
    assert shown.json()["name"] == "Again"


async def test_optimistic_concurrency_412(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Sample"})
    url = f"{dv.api}/accounts({account['accountid']})"
    old = account["@odata.etag"]
    assert (
        await dv.client.patch(url, json={"name": "B"}, headers={"If-Match": old})
    ).status_code == 204
    stale = await dv.client.patch(url, json={"name": "C"}, headers={"If-Match": old})
    assert stale.status_code == 412
    assert stale.json()["error"] == {
        "code": "0x80060882",
        "message": (
            "The version of the existing record doesn't match the RowVersion property provided."
        ),
    }
    stale_delete = await dv.client.delete(url, headers={"If-Match": old})
    assert stale_delete.status_code == 412
    current = (await dv.client.get(url)).json()["@odata.etag"]
    assert (await dv.client.delete(url, headers={"If-Match": current})).status_code == 204
    assert (await dv.client.delete(url)).status_code == 404


async def test_versionnumber_grows_globally(dv: Emulator) -> None:
    first = await _post(dv, "accounts", {"name": "1"})
    second = await _post(dv, "contacts", {"lastname": "2"})
    third = await _post(dv, "accounts", {"name": "3"})
    assert first["versionnumber"] < second["versionnumber"] < third["versionnumber"]


async def test_upsert_by_id_creates_then_updates(dv: Emulator) -> None:
    key = "3c6e4b5f-86f6-e411-80dd-00155d2a68cb"
    url = f"{dv.api}/accounts({key})"
    created = await dv.client.patch(url, json={"name": "Upserted"}, headers=REPRESENTATION)
    assert created.status_code == 201
    updated = await dv.client.patch(url, json={"name": "Again"}, headers=REPRESENTATION)
    assert updated.status_code == 200
    assert updated.json()["accountid"] == key
    plain = await dv.client.patch(url, json={"telephone1": "555"})
    assert plain.status_code == 204
    assert plain.headers["odata-entityid"] == url


async def test_upsert_by_alternate_key(dv: Emulator) -> None:
    url = f"{dv.api}/accounts(accountnumber='C00001')"
    created = await dv.client.patch(url, json={"name": "Adatum"})
    assert created.status_code == 204
    assert created.headers["odata-entityid"] == url
    again = await dv.client.patch(url, json={"name": "Adatum Corporation"}, headers=REPRESENTATION)
    assert again.status_code == 200
    assert again.json()["accountnumber"] == "C00001"
    rows = (await dv.client.get(f"{dv.api}/accounts")).json()["value"]
    assert [r["name"] for r in rows] == ["Adatum Corporation"]
    case_blind = await dv.client.get(f"{dv.api}/accounts(accountnumber='c00001')")
    assert case_blind.status_code == 200


async def test_if_match_star_prevents_create_and_if_none_match_prevents_update(
    dv: Emulator,
) -> None:
    url = f"{dv.api}/accounts(00000000-0000-0000-0000-000000000001)"
    no_create = await dv.client.patch(url, json={"name": "x"}, headers={"If-Match": "*"})
    assert no_create.status_code == 404
    assert no_create.json()["error"]["message"].endswith("Does Not Exist")
    create = await dv.client.patch(url, json={"name": "x"}, headers={"If-None-Match": "*"})
    assert create.status_code == 204
    no_update = await dv.client.patch(url, json={"name": "y"}, headers={"If-None-Match": "*"})
    assert no_update.status_code == 412
    assert (
        no_update.json()["error"]["message"] == "A record with matching key values already exists."
    )
    alternate = f"{dv.api}/accounts(accountnumber='NEW')"
    assert (await dv.client.patch(alternate, json={}, headers={"If-Match": "*"})).status_code == 404


async def test_impersonation_records_the_caller(dv: Emulator) -> None:
    person = await _user(dv, "Jim", "Glynn", islicensed=True)
    integration = await _integration_user(dv)
    account = await _post(dv, "accounts", {"name": "By integration"})
    assert account["_createdby_value"] == integration
    url = f"{dv.api}/accounts({account['accountid']})"
    edit = await dv.client.patch(
        url, json={"name": "By Jim"}, headers={"MSCRMCallerID": person, **REPRESENTATION}
    )
    assert edit.json()["_modifiedby_value"] == person
    assert edit.json()["_createdby_value"] == integration
    who = await dv.client.get(f"{dv.api}/WhoAmI", headers={"MSCRMCallerID": person})
    assert who.json()["UserId"] == person
    entra = "e39c5d16-675b-48d1-8e67-667427e9c084"
    linda = await _user(dv, "Linda", "Martin", azureactivedirectoryobjectid=entra)
    by_object_id = await dv.client.patch(
        url, json={"name": "By Linda"}, headers={"CallerObjectId": entra, **REPRESENTATION}
    )
    assert by_object_id.json()["_modifiedby_value"] == linda
    disabled = await _user(dv, "Peter", "Saddow", isdisabled=True)
    refused = await dv.client.patch(url, json={"name": "x"}, headers={"MSCRMCallerID": disabled})
    assert refused.status_code == 400


async def test_integration_user_is_non_interactive(dv: Emulator) -> None:
    integration = await _integration_user(dv)
    user = (await dv.client.get(f"{dv.api}/systemusers({integration})")).json()
    assert user["fullname"] == "tablesync integration"
    assert user["accessmode"] == 4


async def test_fullname_follows_first_and_last_name(dv: Emulator) -> None:
    contact = await _post(dv, "contacts", {"firstname": "Nancy", "lastname": "Davolio"})
    url = f"{dv.api}/contacts({contact['contactid']})"
    await dv.client.patch(url, json={"lastname": "Fuller"})
    assert (await dv.client.get(url)).json()["fullname"] == "Nancy Fuller"
    refused = await dv.client.patch(url, json={"fullname": "Someone Else"})
    assert refused.status_code == 400


async def test_single_property_get_put_delete(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Sample", "description": "text"})
    url = f"{dv.api}/accounts({account['accountid']})"
    assert (await dv.client.get(f"{url}/name")).json()["value"] == "Sample"
    assert (await dv.client.put(f"{url}/name", json={"value": "Renamed"})).status_code == 204
    assert (await dv.client.delete(f"{url}/description")).status_code == 204
    body = (await dv.client.get(url)).json()
    assert (body["name"], body["description"]) == ("Renamed", None)


async def test_conditional_retrieval_304(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Sample"})
    url = f"{dv.api}/accounts({account['accountid']})"
    response = await dv.client.get(url, headers={"If-None-Match": account["@odata.etag"]})
    assert response.status_code == 304


async def test_count_is_capped_at_5000(dv: Emulator) -> None:
    conn = await asyncpg.connect(dv.dsn)
    try:
        await conn.execute(
            "INSERT INTO accounts (name) SELECT 'Bulk ' || i FROM generate_series(1, 5001) AS i"
        )
    finally:
        await conn.close()
    response = await dv.client.get(
        f"{dv.api}/accounts",
        params={"$count": "true", "$select": "name"},
        headers={
            "Prefer": 'odata.maxpagesize=10,odata.include-annotations="Microsoft.Dynamics.CRM.*"'
        },
    )
    body = response.json()
    assert body["@odata.count"] == 5000
    assert body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"] is True
    assert len(body["value"]) == 10
    assert response.headers["preference-applied"].startswith("odata.maxpagesize=10")
    text = await dv.client.get(f"{dv.api}/accounts/$count")
    assert text.text == "5000"


async def test_concurrent_writers_with_one_etag_only_one_wins(dv: Emulator) -> None:
    account = await _post(dv, "accounts", {"name": "Contended"})
    url = f"{dv.api}/accounts({account['accountid']})"
    etag = account["@odata.etag"]

    async def attempt(i: int) -> int:
        response = await dv.client.patch(
            url, json={"name": f"Writer {i}"}, headers={"If-Match": etag}
        )
        return response.status_code

    statuses = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sorted(statuses) == [204] + [412] * 11


async def test_deleting_a_referenced_currency_is_refused(dv: Emulator) -> None:
    usd = await _usd(dv)
    await _post(dv, "accounts", {"name": "Uses USD"})
    url = f"{dv.api}/transactioncurrencies({usd['transactioncurrencyid']})"
    response = await dv.client.delete(url)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "0x80040227"


async def test_an_accounts_payment_terms_take_only_their_options(dv: Emulator) -> None:
    made = await _post(dv, "accounts", {"name": "Terms", "paymenttermscode": 2})
    assert made["paymenttermscode"] == 2
    outside = await dv.client.post(
        f"{dv.api}/accounts", json={"name": "Bad terms", "paymenttermscode": 9}
    )
    assert outside.status_code == 400
    message = outside.json()["error"]["message"]
    assert "'paymenttermscode' is outside the valid range" in message
    assert message.endswith("Accepted Values: 1,2,3,4")
