"""Dataverse's bulk operation messages (CreateMultiple, UpdateMultiple, UpsertMultiple) as
"Use bulk operation messages" and the actions' Web API reference show them, sent to the
emulator over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson
import pytest

from tablesync.emulators.common.messages import ApiRequest
from tablesync.emulators.dataverse import bulk
from tablesync.emulators.dataverse.specs import spec_for
from tests.emulators.conftest import Emulator
from tests.emulators.test_batch import _batch, _change_set, _request, _statuses

pytestmark = pytest.mark.integration

ACCOUNT = "Microsoft.Dynamics.CRM.account"
CONTACT = "Microsoft.Dynamics.CRM.contact"
USER = "Microsoft.Dynamics.CRM.systemuser"
REPRESENTATION = {"Prefer": "return=representation"}


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


async def _send(dv: Emulator, entity_set: str, message: str, targets: list[Any]) -> Any:
    return await dv.client.post(
        f"{dv.api}/{entity_set}/Microsoft.Dynamics.CRM.{message}", json={"Targets": targets}
    )


async def _accounts(dv: Emulator) -> dict[str, dict[str, Any]]:
    response = await dv.client.get(
        f"{dv.api}/accounts", headers={"Prefer": "odata.maxpagesize=5000"}
    )
    assert response.status_code == 200, response.text
    return {row["accountid"]: row for row in response.json()["value"]}


async def _post(dv: Emulator, entity_set: str, body: dict[str, object]) -> dict[str, Any]:
    response = await dv.client.post(f"{dv.api}/{entity_set}", json=body, headers=REPRESENTATION)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_multiple_answers_the_ids_in_target_order(dv: Emulator) -> None:
    given = _ids(1)[0]
    targets: list[Any] = [
        {"name": "sample record 0000001", "@odata.type": ACCOUNT},
        {"name": "sample record 0000002", "@odata.type": ACCOUNT, "accountid": given},
        {"name": "sample record 0000003", "@odata.type": ACCOUNT, "creditlimit": 5000},
    ]
    response = await _send(dv, "accounts", "CreateMultiple", targets)

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"@odata.context", "Ids"}
    assert body["@odata.context"] == (
        f"{dv.api}/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse"
    )
    ids = body["Ids"]
    assert len(ids) == 3
    assert ids[1] == given
    rows = await _accounts(dv)
    assert [rows[i]["name"] for i in ids] == [t["name"] for t in targets]
    assert rows[ids[2]]["creditlimit"] == 5000
    who = (await dv.client.get(f"{dv.api}/WhoAmI")).json()["UserId"]
    for record_id in ids:
        row = rows[record_id]
        assert row["_ownerid_value"] == row["_createdby_value"] == row["_modifiedby_value"] == who
        assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'
        assert row["modifiedon"] == row["createdon"]
    assert len({rows[i]["versionnumber"] for i in ids}) == 3


async def test_bulk_rows_are_stored_as_single_writes_store_them(dv: Emulator) -> None:
    """A target and the single-record write it stands for leave the same row."""
    await _post(
        dv,
        "transactioncurrencies",
        {
            "isocurrencycode": "USD",
            "currencyname": "US Dollar",
            "currencysymbol": "$",
            "exchangerate": 1.0,
        },
    )
    boss = await _post(dv, "contacts", {"lastname": "Boss"})
    values = {
        "firstname": "Nancy",
        "lastname": "Davolio",
        "parentcustomerid_contact@odata.bind": f"/contacts({boss['contactid']})",
    }
    single = await _post(dv, "contacts", values)
    response = await _send(dv, "contacts", "CreateMultiple", [{**values, "@odata.type": CONTACT}])
    assert response.status_code == 200, response.text
    [bulk_id] = response.json()["Ids"]
    bulk_row = (await dv.client.get(f"{dv.api}/contacts({bulk_id})")).json()

    differing = {
        "@odata.context",
        "@odata.etag",
        "contactid",
        "versionnumber",
        "createdon",
        "modifiedon",
    }
    assert {k: v for k, v in bulk_row.items() if k not in differing} == {
        k: v for k, v in single.items() if k not in differing
    }
    assert bulk_row["fullname"] == "Nancy Davolio"
    assert bulk_row["_parentcustomerid_value"] == boss["contactid"]


async def test_update_multiple_answers_204_and_stamps_each_row(dv: Emulator) -> None:
    created = await _send(
        dv,
        "accounts",
        "CreateMultiple",
        [{"name": f"a{i}", "@odata.type": ACCOUNT} for i in range(3)],
    )
    ids = created.json()["Ids"]
    before = await _accounts(dv)
    targets = [
        {"name": f"a{i} Updated", "@odata.type": ACCOUNT, "accountid": record_id}
        for i, record_id in enumerate(ids)
    ]
    response = await dv.client.post(
        f"{dv.api}/accounts/Microsoft.Dynamics.CRM.UpdateMultiple?tag=CreateUpdateMultiple",
        json={"Targets": targets},
        headers=REPRESENTATION,
    )

    assert response.status_code == 204, response.text
    assert response.content == b""
    after = await _accounts(dv)
    for i, record_id in enumerate(ids):
        assert after[record_id]["name"] == f"a{i} Updated"
        assert after[record_id]["versionnumber"] > before[record_id]["versionnumber"]
        assert after[record_id]["createdon"] == before[record_id]["createdon"]


async def test_update_multiple_keeps_computed_columns_right(dv: Emulator) -> None:
    contact = await _post(dv, "contacts", {"firstname": "Nancy", "lastname": "Davolio"})
    response = await _send(
        dv,
        "contacts",
        "UpdateMultiple",
        [{"@odata.type": CONTACT, "contactid": contact["contactid"], "lastname": "Fuller"}],
    )
    assert response.status_code == 204, response.text
    row = (await dv.client.get(f"{dv.api}/contacts({contact['contactid']})")).json()
    assert row["fullname"] == "Nancy Fuller"


async def test_upsert_multiple_creates_and_updates_by_alternate_key(dv: Emulator) -> None:
    existing = await _post(dv, "accounts", {"name": "old", "accountnumber": "0000001"})
    targets = [
        {
            "@odata.type": ACCOUNT,
            "name": f"sample record {n}",
            "@odata.id": f"accounts(accountnumber='{n}')",
        }
        for n in ("0000001", "0000002")
    ]
    response = await _send(dv, "accounts", "UpsertMultiple", targets)

    assert response.status_code == 204, response.text
    rows = await _accounts(dv)
    assert len(rows) == 2
    assert rows[existing["accountid"]]["name"] == "sample record 0000001"
    [new] = [r for r in rows.values() if r["accountid"] != existing["accountid"]]
    assert (new["name"], new["accountnumber"]) == ("sample record 0000002", "0000002")


async def test_upsert_multiple_by_primary_key(dv: Emulator) -> None:
    existing = await _post(dv, "accounts", {"name": "old", "telephone1": "555"})
    fresh, by_column = _ids(2)
    targets = [
        {"@odata.type": ACCOUNT, "@odata.id": f"accounts({existing['accountid']})", "name": "new"},
        {"@odata.type": ACCOUNT, "@odata.id": f"/accounts({fresh})", "name": "fresh"},
        {"@odata.type": ACCOUNT, "accountid": by_column, "name": "by column"},
    ]
    response = await _send(dv, "accounts", "UpsertMultiple", targets)

    assert response.status_code == 204, response.text
    rows = await _accounts(dv)
    assert rows[existing["accountid"]]["name"] == "new"
    assert rows[existing["accountid"]]["telephone1"] == "555"
    assert rows[existing["accountid"]]["createdon"] == existing["createdon"]
    assert rows[fresh]["name"] == "fresh"
    assert rows[by_column]["name"] == "by column"


async def test_a_target_without_a_required_field_fails_as_its_create_fails(dv: Emulator) -> None:
    single = await dv.client.post(f"{dv.api}/systemusers", json={"firstname": "Ann"})
    response = await _send(
        dv,
        "systemusers",
        "CreateMultiple",
        [
            {"@odata.type": USER, "firstname": "Bo", "lastname": "Kept"},
            {"@odata.type": USER, "firstname": "Ann"},
        ],
    )
    assert response.status_code == single.status_code == 400
    assert response.json() == single.json()
    assert response.json()["error"]["code"] == "0x80040203"


async def test_upsert_without_a_required_field_only_updates(dv: Emulator) -> None:
    existing = await _post(dv, "systemusers", {"lastname": "Kept"})
    missing = _ids(1)[0]
    updates = await _send(
        dv,
        "systemusers",
        "UpsertMultiple",
        [{"@odata.type": USER, "systemuserid": existing["systemuserid"], "firstname": "Ann"}],
    )
    assert updates.status_code == 204, updates.text
    single = await dv.client.patch(f"{dv.api}/systemusers({missing})", json={"firstname": "Ann"})
    refused = await _send(
        dv,
        "systemusers",
        "UpsertMultiple",
        [
            {"@odata.type": USER, "systemuserid": existing["systemuserid"], "firstname": "Bo"},
            {"@odata.type": USER, "systemuserid": missing, "firstname": "Ann"},
        ],
    )

    assert refused.status_code == single.status_code == 400
    assert refused.json() == single.json()
    row = (await dv.client.get(f"{dv.api}/systemusers({existing['systemuserid']})")).json()
    assert row["fullname"] == "Ann Kept"


BAD_TARGETS: list[tuple[str, dict[str, object]]] = [
    ("unknown property", {"name": "x", "nosuchcolumn": 1}),
    ("read-only column", {"name": "x", "versionnumber": 5}),
    ("wrong type", {"name": "x", "creditlimit": "lots"}),
    ("lookup value property", {"name": "x", "_ownerid_value": str(uuid.UUID(int=7))}),
    (
        "bind to a missing row",
        {"name": "x", "ownerid@odata.bind": f"/systemusers({uuid.UUID(int=9)})"},
    ),
    (
        "bind to another set",
        {"name": "x", "primarycontactid@odata.bind": f"/accounts({uuid.UUID(int=3)})"},
    ),
    ("bad guid", {"name": "x", "accountid": "not-a-guid"}),
]


@pytest.mark.parametrize(("case", "bad"), BAD_TARGETS, ids=[c for c, _ in BAD_TARGETS])
async def test_a_bad_target_fails_the_whole_create_as_its_single_create_fails(
    dv: Emulator, case: str, bad: dict[str, object]
) -> None:
    single = await dv.client.post(f"{dv.api}/accounts", json=bad)
    assert single.status_code >= 400, case
    targets = [{"name": f"good {i}", "@odata.type": ACCOUNT} for i in range(5)]
    targets.insert(3, {**bad, "@odata.type": ACCOUNT})

    response = await _send(dv, "accounts", "CreateMultiple", targets)

    assert response.status_code == single.status_code, response.text
    assert response.json() == single.json()
    assert await _accounts(dv) == {}


async def test_an_existing_id_fails_the_whole_create(dv: Emulator) -> None:
    taken = await _post(dv, "accounts", {"name": "taken"})
    fresh = _ids(3)
    targets = [{"name": "x", "@odata.type": ACCOUNT, "accountid": i} for i in fresh]
    targets.append({"name": "y", "@odata.type": ACCOUNT, "accountid": taken["accountid"]})
    single = await dv.client.post(
        f"{dv.api}/accounts", json={"name": "y", "accountid": taken["accountid"]}
    )

    response = await _send(dv, "accounts", "CreateMultiple", targets)

    assert response.status_code == single.status_code == 412
    assert response.json() == single.json()
    assert list(await _accounts(dv)) == [taken["accountid"]]


async def test_an_update_of_a_missing_row_fails_the_whole_request(dv: Emulator) -> None:
    first = await _post(dv, "accounts", {"name": "first"})
    gone, also_gone = _ids(2)
    targets = [
        {"@odata.type": ACCOUNT, "accountid": first["accountid"], "name": "changed"},
        {"@odata.type": ACCOUNT, "accountid": also_gone, "name": "never"},
        {"@odata.type": ACCOUNT, "accountid": gone, "name": "never"},
    ]

    response = await _send(dv, "accounts", "UpdateMultiple", targets)

    assert response.status_code == 404, response.text
    assert response.json()["error"] == {
        "code": "0x80040217",
        "message": f"account With Ids = {also_gone} Do Not Exist",
    }
    rows = await _accounts(dv)
    assert rows[first["accountid"]]["name"] == "first"
    assert rows[first["accountid"]]["versionnumber"] == first["versionnumber"]


async def test_a_bad_bind_in_one_upsert_rolls_back_the_others(dv: Emulator) -> None:
    existing = await _post(dv, "accounts", {"name": "kept"})
    targets = [
        {"@odata.type": ACCOUNT, "accountid": existing["accountid"], "name": "changed"},
        {"@odata.type": ACCOUNT, "accountid": _ids(1)[0], "name": "new"},
        {
            "@odata.type": ACCOUNT,
            "accountid": _ids(1)[0],
            "name": "bad",
            "primarycontactid@odata.bind": f"/contacts({uuid.UUID(int=5)})",
        },
    ]

    response = await _send(dv, "accounts", "UpsertMultiple", targets)

    assert response.status_code == 404, response.text
    assert (
        response.json()["error"]["message"]
        == f"contact With Id = {uuid.UUID(int=5)} Does Not Exist"
    )
    rows = await _accounts(dv)
    assert list(rows) == [existing["accountid"]]
    assert rows[existing["accountid"]]["name"] == "kept"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ({"name": "x"}, "has no @odata.type"),
        ({"name": "x", "@odata.type": CONTACT}, "has @odata.type 'Microsoft.Dynamics.CRM.contact'"),
    ],
)
async def test_every_target_must_carry_the_type_of_the_set(
    dv: Emulator, target: dict[str, object], expected: str
) -> None:
    for message in ("CreateMultiple", "UpdateMultiple", "UpsertMultiple"):
        response = await _send(
            dv, "accounts", message, [{"name": "ok", "@odata.type": ACCOUNT}, target]
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "0x80048d19"
        assert error["message"].startswith(f"Targets[1] of {message} {expected}")
    assert await _accounts(dv) == {}


@pytest.mark.parametrize(
    "body", [{}, {"Targets": []}, {"Targets": {"name": "x"}}, {"Targets": [1]}]
)
async def test_targets_must_be_a_list_of_records(dv: Emulator, body: dict[str, object]) -> None:
    response = await dv.client.post(
        f"{dv.api}/accounts/Microsoft.Dynamics.CRM.CreateMultiple", json=body
    )
    assert response.status_code == 400, response.text
    assert "Targets" in response.json()["error"]["message"]


async def test_a_record_named_twice_is_refused(dv: Emulator) -> None:
    record_id = _ids(1)[0]
    twice = [
        {"@odata.type": ACCOUNT, "accountid": record_id, "name": "one"},
        {"@odata.type": ACCOUNT, "@odata.id": f"accounts({record_id.upper()})", "name": "two"},
    ]
    by_key = [
        {"@odata.type": ACCOUNT, "@odata.id": "accounts(accountnumber='A1')", "name": "one"},
        {"@odata.type": ACCOUNT, "@odata.id": "accounts(accountnumber='a1')", "name": "two"},
    ]
    for message, targets in (
        ("UpsertMultiple", twice),
        ("UpdateMultiple", twice),
        ("UpsertMultiple", by_key),
    ):
        response = await _send(dv, "accounts", message, targets)
        assert response.status_code == 400, response.text
        assert "Targets[0] and Targets[1]" in response.json()["error"]["message"]
    assert await _accounts(dv) == {}


async def test_update_and_upsert_targets_must_name_their_row(dv: Emulator) -> None:
    for message in ("UpdateMultiple", "UpsertMultiple"):
        response = await _send(dv, "accounts", message, [{"@odata.type": ACCOUNT, "name": "x"}])
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"].startswith(f"Targets[0] of {message} names no")
    key, other = _ids(2)
    differs = await _send(
        dv,
        "accounts",
        "UpsertMultiple",
        [{"@odata.type": ACCOUNT, "@odata.id": f"accounts({key})", "accountid": other}],
    )
    assert differs.status_code == 400
    assert "differs from the key" in differs.json()["error"]["message"]


async def test_change_tracking_sees_every_bulk_written_row(dv: Emulator) -> None:
    first = await dv.client.get(
        f"{dv.api}/accounts?$select=name", headers={"Prefer": "odata.track-changes"}
    )
    delta = first.json()["@odata.deltaLink"]
    created = await _send(
        dv,
        "accounts",
        "CreateMultiple",
        [{"name": f"c{i}", "@odata.type": ACCOUNT} for i in range(40)],
    )
    ids = created.json()["Ids"]
    changes = await dv.client.get(delta)
    assert sorted(r["accountid"] for r in changes.json()["value"]) == sorted(ids)

    later = changes.json()["@odata.deltaLink"]
    updated = await _send(
        dv,
        "accounts",
        "UpdateMultiple",
        [{"accountid": i, "name": "u", "@odata.type": ACCOUNT} for i in ids[:10]],
    )
    assert updated.status_code == 204
    upserted = await _send(
        dv,
        "accounts",
        "UpsertMultiple",
        [{"accountid": i, "name": "v", "@odata.type": ACCOUNT} for i in [*ids[10:15], *_ids(5)]],
    )
    assert upserted.status_code == 204
    seen = (await dv.client.get(later)).json()["value"]
    assert len(seen) == 20
    assert {r["name"] for r in seen} == {"u", "v"}


async def test_a_bulk_request_counts_once_against_the_limit(dv: Emulator) -> None:
    await dv.configure(requests_per_window=2, window_s=60)
    targets = [{"name": f"n{i}", "@odata.type": ACCOUNT} for i in range(100)]

    assert (await _send(dv, "accounts", "CreateMultiple", targets)).status_code == 200
    assert (await dv.client.get(f"{dv.api}/accounts/$count")).text == "100"
    throttled = await _send(dv, "accounts", "CreateMultiple", targets)

    assert throttled.status_code == 429
    assert "retry-after" in throttled.headers
    await dv.configure(requests_per_window=1_000_000, window_s=5)
    assert (await dv.client.get(f"{dv.api}/accounts/$count")).text == "100"
    stats = (await dv.control("GET", "stats")).json()
    assert stats["by_method"]["POST"] == 2


async def test_an_injected_fault_fails_the_bulk_request_as_a_whole(dv: Emulator) -> None:
    await dv.control("POST", "faults", json={"status": 503, "count": 1, "retry_after": 1})
    targets = [{"name": f"n{i}", "@odata.type": ACCOUNT} for i in range(10)]
    refused = await _send(dv, "accounts", "CreateMultiple", targets)
    assert refused.status_code == 503
    assert await _accounts(dv) == {}
    assert (await _send(dv, "accounts", "CreateMultiple", targets)).status_code == 200


async def test_bulk_messages_are_refused_inside_batch(dv: Emulator) -> None:
    url = f"{dv.root}/accounts/Microsoft.Dynamics.CRM.CreateMultiple"
    body = {"Targets": [{"name": "x", "@odata.type": ACCOUNT}]}
    content_type, payload = _batch(
        [
            _request("POST", url, body),
            _change_set("changeset_1", [_request("POST", url, body, "1")]),
        ]
    )
    response = await dv.client.post(
        f"{dv.api}/$batch",
        content=payload,
        headers={"Content-Type": content_type, "Prefer": "odata.continue-on-error"},
    )
    assert _statuses(response.headers["content-type"], response.content) == [501, 501]
    assert await _accounts(dv) == {}


async def test_only_post_invokes_an_action(dv: Emulator) -> None:
    response = await dv.client.get(f"{dv.api}/accounts/Microsoft.Dynamics.CRM.CreateMultiple")
    assert response.status_code == 405


class _Counting:
    """An executor that counts the statements sent through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    async def fetch(self, query: str, *args: object) -> list[Any]:
        self.statements += 1
        return await self.conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: object) -> Any:
        self.statements += 1
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: object) -> Any:
        self.statements += 1
        return await self.conn.fetchval(query, *args)

    async def execute(self, query: str, *args: object) -> str:
        self.statements += 1
        return await self.conn.execute(query, *args)


@pytest.mark.parametrize("message", ["CreateMultiple", "UpdateMultiple", "UpsertMultiple"])
async def test_one_statement_writes_a_thousand_rows(dv: Emulator, message: bulk.Message) -> None:
    contact = await _post(dv, "contacts", {"lastname": "Primary"})
    ids = _ids(1000)
    if message == "UpdateMultiple":
        seeded = await _send(
            dv,
            "accounts",
            "CreateMultiple",
            [{"accountid": i, "name": "s", "@odata.type": ACCOUNT} for i in ids],
        )
        assert seeded.status_code == 200
    targets = []
    for n, record_id in enumerate(ids):
        target: dict[str, object] = {
            "@odata.type": ACCOUNT,
            "accountid": record_id,
            "name": f"r{n}",
        }
        # Rows of three shapes: with a lookup, clearing it, and without it.
        if n % 3 == 0:
            target["primarycontactid@odata.bind"] = f"/contacts({contact['contactid']})"
        elif n % 3 == 1:
            target["primarycontactid@odata.bind"] = None
        targets.append(target)
    request = ApiRequest(
        method="POST",
        path=f"accounts/Microsoft.Dynamics.CRM.{message}",
        query={},
        raw_query="",
        headers={},
        body=orjson.dumps({"Targets": targets}),
        service_root=dv.api,
        root=dv.root,
    )
    spec = spec_for("accounts")
    assert spec is not None
    caller = uuid.UUID((await dv.client.get(f"{dv.api}/WhoAmI")).json()["UserId"])
    conn = await asyncpg.connect(dv.dsn)
    try:
        counting = _Counting(conn)
        response = await bulk.run(request, counting, spec, message, caller)
    finally:
        await conn.close()

    assert response.status < 300, response.body
    assert counting.statements == 1
    rows = await _accounts(dv)
    assert {rows[i]["name"] for i in ids} == {f"r{n}" for n in range(1000)}
    linked = [i for n, i in enumerate(ids) if n % 3 == 0]
    assert {rows[i]["_primarycontactid_value"] for i in linked} == {contact["contactid"]}


async def test_update_multiple_by_alternate_key(dv: Emulator) -> None:
    row = await _post(dv, "accounts", {"name": "old", "accountnumber": "K1"})
    target = {"@odata.type": ACCOUNT, "@odata.id": "accounts(accountnumber='k1')", "name": "new"}
    assert (await _send(dv, "accounts", "UpdateMultiple", [target])).status_code == 204
    assert (await _accounts(dv))[row["accountid"]]["name"] == "new"

    missing = {**target, "@odata.id": "accounts(accountnumber='K2')"}
    refused = await _send(dv, "accounts", "UpdateMultiple", [target, missing])
    assert refused.status_code == 404
    assert refused.json()["error"]["message"] == (
        "A record with the specified key values does not exist in account entity"
    )
