"""The errors page over the admin API on a real stack: the records that did not
sync, and every action of BC's Coupled Data Synchronization Errors page —
retry (one record or all of a mapping), restore, delete records (confirmed),
delete couplings, find deleted couplings — with the jobs they write and how
they refuse bad input."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tablesync.runtime.operations import Operations
from tests.admin.conftest import Admin
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

ACTION_KINDS = ["retry", "restore", "delete_records", "delete_couplings", "find_deleted"]


async def _json(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


async def _full_sync(ops: Operations) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message


async def _listed(admin: Admin, mapping: str, record_id: str) -> dict[str, Any] | None:
    rows = await _json(await admin.client.get("/api/errors", params={"mapping": mapping}))
    return next((r for r in rows if record_id in (r["bc_id"], r["dataverse_id"])), None)


async def test_a_skipped_record_is_listed_and_retry_all_of_its_mapping_syncs_it(
    admin: Admin, ops: Operations
) -> None:
    api, stack = admin.client, admin.stack
    # A Dataverse vendor holds the account number a new BC customer will need.
    twin = await stack.dv_post(
        "accounts", {"name": "Vendor twin", "accountnumber": "C90009", "customertypecode": 11}
    )
    await _full_sync(ops)
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    customer = await stack.bc_post("customers", {"displayName": "Twin Co", "number": "C90009"})

    async def skipped() -> dict[str, Any] | None:
        rows = await _json(await api.get("/api/errors", params={"skipped": "true"}))
        return next((r for r in rows if r["bc_id"] == customer["id"]), None)

    row = await wait_for(skipped, timeout_s=90, what="the repeated failure to become skipped")
    assert (row["mapping"], row["status"], row["source_side"], row["source_id"]) == (
        "CUSTOMER",
        "skipped",
        "bc",
        customer["id"],
    )
    assert row["dataverse_id"] is None and row["same_failures"] >= 2 and row["message"]
    assert await _json(await api.get("/api/errors", params={"mapping": "VENDOR"})) == []
    assert len(await _json(await api.get("/api/errors", params={"limit": 1}))) == 1

    # The cause goes away; a skipped record waits for the operator.
    await stack.dv_patch("accounts", twin["accountid"], {"accountnumber": "V-TWIN"})
    assert customer["id"] not in await stack.couplings("CUSTOMER")
    result = await _json(await api.post("/api/errors/retry", json={"mapping": "CUSTOMER"}))
    assert result["action"] == "retry" and result["records"] >= 1
    assert result["counts"]["inserted"] == 1, result
    assert customer["id"] in await stack.couplings("CUSTOMER")
    assert await _listed(admin, "CUSTOMER", customer["id"]) is None
    for job_id in result["jobs"]:
        job = await _json(await api.get(f"/api/jobs/{job_id}"))
        assert (job["kind"], job["type"], job["status"]) == ("retry", "synchronization", "finished")


async def test_deleted_couplings_are_found_restored_deleted_and_uncoupled(
    admin: Admin, ops: Operations
) -> None:
    api, stack = admin.client, admin.stack
    await _full_sync(ops)
    (bc_1, dv_1), (bc_2, dv_2), (bc_3, dv_3) = sorted((await stack.couplings("CUSTOMER")).items())[
        :3
    ]
    for dv_id in (dv_1, dv_2):
        assert (await stack.dv.delete(f"/api/data/v9.2/accounts({dv_id})")).status_code == 204

    found = await _json(await api.post("/api/errors/find-deleted", json={"mapping": "CUSTOMER"}))
    # One job per side of the mapping; capture's own scan may have flagged some first.
    assert found["action"] == "find_deleted" and len(found["jobs"]) == 2
    assert set(found["counts"]) <= {"deleted"}
    for bc_id, dv_id in ((bc_1, dv_1), (bc_2, dv_2)):
        row = await _listed(admin, "CUSTOMER", dv_id)
        assert row is not None, f"{dv_id} is not listed after find-deleted"
        assert (row["reason"], row["status"], row["source_side"], row["bc_id"]) == (
            "deleted",
            "skipped",
            "dataverse",
            bc_id,
        )

    restored = await _json(await api.post("/api/errors/restore", json={"ids": [dv_1]}))
    assert (restored["action"], restored["records"], restored["counts"]) == (
        "restore",
        1,
        {"inserted": 1},
    )
    new_dv = (await stack.couplings("CUSTOMER"))[bc_1]
    assert new_dv != dv_1
    assert await stack.dv_rows("accounts", f"?$filter=accountid eq {new_dv}")
    assert await _listed(admin, "CUSTOMER", dv_1) is None

    # Deleting records on a side is refused until it is confirmed.
    for body in ({"ids": [dv_2]}, {"ids": [dv_2], "confirm": False}):
        refused = await api.post("/api/errors/delete-records", json=body)
        assert refused.status_code == 400, refused.text
        assert '"confirm": true' in refused.json()["error"]
        assert refused.json()["fields"] == [{"field": "confirm", "message": "must be true"}]
    assert await stack.bc_rows("customers", f"?$filter=id eq {bc_2}"), "nothing deleted"
    deleted = await _json(
        await api.post("/api/errors/delete-records", json={"ids": [dv_2], "confirm": True})
    )
    assert (deleted["action"], deleted["records"], deleted["counts"]) == (
        "delete_records",
        1,
        {"deleted": 1, "uncoupled": 1},
    )
    assert await stack.bc_rows("customers", f"?$filter=id eq {bc_2}") == []
    assert bc_2 not in await stack.couplings("CUSTOMER")

    uncoupled = await _json(await api.post("/api/errors/delete-couplings", json={"ids": [bc_3]}))
    assert (uncoupled["action"], uncoupled["records"], uncoupled["counts"]) == (
        "delete_couplings",
        1,
        {"uncoupled": 1},
    )
    assert bc_3 not in await stack.couplings("CUSTOMER")
    # Neither record changes.
    assert await stack.bc_rows("customers", f"?$filter=id eq {bc_3}")
    assert await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_3}")

    kinds = {
        j["kind"]
        for j in await _json(await api.get("/api/jobs", params={"mapping": "CUSTOMER"}))
        if j["run_id"] is None
    }
    assert {"find_deleted", "restore", "delete_records", "delete_couplings"} <= kinds


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], str]] = [
    # method, path, request options, a word the 400's message must contain
    ("GET", "/api/errors", {"params": {"skipped": "maybe"}}, "skipped"),
    ("GET", "/api/errors", {"params": {"limit": "0"}}, "limit"),
    ("GET", "/api/errors", {"params": {"job": "x"}}, "job"),
    ("POST", "/api/errors/retry", {"json": {}}, "say which records"),
    ("POST", "/api/errors/retry", {}, "say which records"),
    ("POST", "/api/errors/retry", {"json": {"ids": ["not-a-guid"]}}, "ids"),
    ("POST", "/api/errors/retry", {"json": {"mapping": "NOPE"}}, "unknown mapping 'NOPE'"),
    ("POST", "/api/errors/retry", {"json": {"all": "maybe"}}, "all"),
    ("POST", "/api/errors/retry", {"json": {"ids": "x"}}, "ids"),
    ("POST", "/api/errors/restore", {"json": {"id": [str(uuid.uuid4())]}}, "id"),
    ("POST", "/api/errors/restore", {"content": b"{not json"}, "JSON"),
    ("POST", "/api/errors/restore", {"json": [1]}, "object"),
    ("POST", "/api/errors/delete-records", {"json": {"all": True}}, "confirm"),
    ("POST", "/api/errors/delete-records", {"json": {"all": True, "confirm": False}}, "confirm"),
    ("POST", "/api/errors/delete-records", {"json": {"all": True, "confirm": "sure"}}, "confirm"),
    ("POST", "/api/errors/delete-records", {"json": {"confirm": True}}, "say which records"),
    (
        "POST",
        "/api/errors/delete-records",
        {"json": {"mapping": "NOPE", "confirm": True}},
        "unknown mapping 'NOPE'",
    ),
    ("POST", "/api/errors/delete-couplings", {"json": {"since": "yesterday"}}, "since"),
    ("POST", "/api/errors/delete-couplings", {"json": {}}, "say which records"),
    ("POST", "/api/errors/find-deleted", {"json": {"mapping": "NOPE"}}, "unknown mapping 'NOPE'"),
    ("POST", "/api/errors/find-deleted", {"json": {"mappings": ["CUSTOMER"]}}, "mappings"),
]


async def test_invalid_input_and_unconfirmed_deletions_get_400_and_change_nothing(
    admin: Admin, ops: Operations
) -> None:
    await _full_sync(ops)
    couplings = await admin.stack.couplings("CUSTOMER")
    customers = len(await admin.stack.bc_rows("customers"))
    for method, path, options, word in BAD_REQUESTS:
        r = await admin.client.request(method, path, **options)
        assert r.status_code == 400, f"{method} {path} {options}: {r.status_code} {r.text}"
        assert r.headers["content-type"] == "application/json"
        assert word in r.json()["error"], f"{method} {path} {options}: {r.json()}"
    assert await admin.stack.couplings("CUSTOMER") == couplings
    assert len(await admin.stack.bc_rows("customers")) == customers
    acted = await admin.stack.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE kind = ANY($1::text[])", ACTION_KINDS
    )
    assert acted == 0
    # A selection that names no listed record does nothing, and says so.
    nothing = await _json(
        await admin.client.post("/api/errors/retry", json={"ids": [str(uuid.uuid4())]})
    )
    assert (nothing["action"], nothing["records"], nothing["counts"]) == ("retry", 0, {})
