"""The admin API on a real stack: what it lists after a real full
synchronization, the changes it makes, and how it refuses bad input."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.runtime.operations import Operations
from tests.admin.conftest import Admin
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

ORDER = list(load_mapping_file(default_mapping_file())[1].names())


async def _json(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json()


async def test_mappings_jobs_errors_and_couplings_of_a_real_run(
    admin: Admin, ops: Operations
) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    api = admin.client

    mappings = await _json(await api.get("/api/mappings"))
    assert [m["name"] for m in mappings] == ORDER
    customer = next(m for m in mappings if m["name"] == "CUSTOMER")
    assert customer["bc_table"] == "customers" and customer["dataverse_table"] == "accounts"
    assert customer["last_job"]["run_id"] == progress.run.run_id
    detail = await _json(await api.get("/api/mappings/CUSTOMER"))
    assert any(f["dataverse"] == "name" for f in detail["fields"])

    jobs = await _json(await api.get("/api/jobs", params={"run": progress.run.run_id}))
    assert {(j["mapping"], j["direction"]) for j in jobs} == {
        (j.mapping, j.direction) for j in progress.jobs
    }
    started = [j["started_at"] for j in jobs]
    assert started == sorted(started, reverse=True), "newest first"
    by_id = {j.job_id: j for j in progress.jobs}
    for j in jobs:
        assert j["counts"] == by_id[j["job_id"]].counts
        assert j["kind"] == "full" and j["status"] == "finished"
    only = await _json(await api.get("/api/jobs", params={"mapping": "CUSTOMER", "kind": "full"}))
    assert {j["direction"] for j in only} == {"to_integration", "from_integration"}
    assert await _json(await api.get("/api/jobs", params={"kind": "modified"})) == []
    assert len(await _json(await api.get("/api/jobs", params={"limit": 3}))) == 3

    one = jobs[0]
    assert await _json(await api.get(f"/api/jobs/{one['job_id']}")) == one
    assert await _json(await api.get(f"/api/jobs/{one['job_id']}/errors")) == []
    missing = await api.get(f"/api/jobs/{uuid.uuid4()}/errors")
    assert missing.status_code == 404 and "no job" in missing.json()["error"]

    couplings = await _json(await api.get("/api/couplings", params={"mapping": "CUSTOMER"}))
    assert len(couplings) == len(await admin.stack.couplings("CUSTOMER"))
    pair = couplings[0]
    found = await _json(await api.get("/api/couplings", params={"search": pair["dataverse_id"]}))
    assert [c["bc_id"] for c in found] == [pair["bc_id"]]
    gone = await _json(await api.delete(f"/api/couplings/CUSTOMER/bc/{pair['bc_id']}"))
    assert gone == {
        "mapping": "CUSTOMER",
        "bc_id": pair["bc_id"],
        "dataverse_id": pair["dataverse_id"],
    }
    assert pair["bc_id"] not in await admin.stack.couplings("CUSTOMER")
    again = await api.delete(f"/api/couplings/CUSTOMER/bc/{pair['bc_id']}")
    assert again.status_code == 404 and "is not coupled" in again.json()["error"]
    body = {"mapping": "CUSTOMER", "bc_id": pair["bc_id"], "dataverse_id": pair["dataverse_id"]}
    coupled = await _json(await api.post("/api/couplings", json=body), 201)
    assert (coupled["bc_id"], coupled["dataverse_id"]) == (pair["bc_id"], pair["dataverse_id"])
    assert (await admin.stack.couplings("CUSTOMER"))[pair["bc_id"]] == pair["dataverse_id"]

    changed = await _json(
        await api.patch("/api/mappings/CUSTOMER", json={"sync_only_coupled": False})
    )
    assert changed["sync_only_coupled"] is False
    changed = await _json(
        await api.patch("/api/mappings/CUSTOMER", json={"table_filter": "city eq 'Atlanta'"})
    )
    assert changed["table_filter"] == "city eq 'Atlanta'"
    cleared = await _json(await api.patch("/api/mappings/CUSTOMER", json={"table_filter": ""}))
    assert cleared["table_filter"] is None


async def test_couple_reads_both_records_and_refuses_a_record_coupled_to_another(
    admin: Admin,
) -> None:
    api = admin.client
    customers = await admin.stack.bc_rows("customers")
    accounts = await admin.stack.dv_rows("accounts")
    (c1, c2), (a1, a2) = customers[:2], accounts[:2]
    bc_1, bc_2, dv_1, dv_2 = c1["id"], c2["id"], a1["accountid"], a2["accountid"]
    assert {bc_1, bc_2}.isdisjoint(await admin.stack.couplings("CUSTOMER"))
    ghost = str(uuid.uuid4())

    def pair(bc_id: str, dv_id: str) -> dict[str, str]:
        return {"mapping": "CUSTOMER", "bc_id": bc_id, "dataverse_id": dv_id}

    missing = await api.post("/api/couplings", json=pair(ghost, dv_1))
    assert missing.status_code == 404
    assert missing.json()["error"] == f"bc has no customers record {ghost}"
    missing = await api.post("/api/couplings", json=pair(bc_1, ghost))
    assert missing.status_code == 404
    assert missing.json()["error"] == f"dataverse has no accounts record {ghost}"
    assert bc_1 not in await admin.stack.couplings("CUSTOMER"), "nothing coupled on a refusal"

    coupled = await _json(await api.post("/api/couplings", json=pair(bc_1, dv_1)), 201)
    assert (coupled["bc_id"], coupled["dataverse_id"]) == (bc_1, dv_1)
    assert coupled["bc_key"] == c1["number"], "the BC key is read from the BC record"

    taken = await api.post("/api/couplings", json=pair(bc_1, dv_2))
    assert taken.status_code == 409
    assert (
        f"bc record {bc_1} is already coupled to dataverse record {dv_1}" in (taken.json()["error"])
    )
    taken = await api.post("/api/couplings", json=pair(bc_2, dv_1))
    assert taken.status_code == 409
    assert (
        f"dataverse record {dv_1} is already coupled to bc record {bc_1}" in (taken.json()["error"])
    )
    # The same pair again is no conflict.
    await _json(await api.post("/api/couplings", json=pair(bc_1, dv_1)), 201)
    couplings = await admin.stack.couplings("CUSTOMER")
    assert couplings[bc_1] == dv_1 and bc_2 not in couplings

    unknown = await api.delete(f"/api/couplings/NOPE/bc/{bc_1}")
    assert unknown.status_code == 404 and "unknown mapping 'NOPE'" in unknown.json()["error"]
    gone = await _json(await api.delete(f"/api/couplings/CUSTOMER/dataverse/{dv_1}"))
    assert gone == {"mapping": "CUSTOMER", "bc_id": bc_1, "dataverse_id": dv_1}
    assert bc_1 not in await admin.stack.couplings("CUSTOMER")
    jobs = await _json(
        await api.get("/api/jobs", params={"mapping": "CUSTOMER", "kind": "uncouple"})
    )
    assert [(j["type"], j["status"], j["counts"]["uncoupled"]) for j in jobs] == [
        ("uncoupling", "finished", 1)
    ]
    again = await api.delete(f"/api/couplings/CUSTOMER/dataverse/{dv_1}")
    assert again.status_code == 404
    assert again.json()["error"] == f"CUSTOMER: dataverse record {dv_1} is not coupled"
    assert len(await _json(await api.get("/api/jobs", params={"kind": "uncouple"}))) == 1


async def test_runs_are_started_followed_and_a_second_full_sync_is_refused(
    admin: Admin, ops: Operations
) -> None:
    api = admin.client
    accepted = await _json(await api.post("/api/runs/full-sync"), 202)
    run_id = accepted["run_id"]
    assert accepted["progress"] == f"/api/runs/{run_id}"
    refused = await api.post("/api/runs/full-sync", json={"mappings": ["CURRENCY"]})
    assert refused.status_code == 409
    assert refused.json()["run_id"] == run_id
    assert run_id in refused.json()["error"]
    # Requested without ask: it never asks, so an answer is refused.
    unasked = await api.post(f"/api/runs/{run_id}/answer", json={"keep": True})
    assert unasked.status_code == 409 and "asks nothing" in unasked.json()["error"]

    async def finished() -> dict[str, Any] | None:
        run = await _json(await api.get(f"/api/runs/{run_id}"))
        return run if run["done"] else None

    run = await wait_for(finished, timeout_s=120, what="the full sync started over the API")
    assert run["status"] == "finished" and run["requested_by"] == "admin"
    assert {j["mapping"] for j in run["jobs"]} == set(ORDER)
    assert run["failed_records"] == 0
    ended = await api.post(f"/api/runs/{run_id}/cancel")
    assert ended.status_code == 409 and "ended already (finished)" in ended.json()["error"]
    ended = await api.post(f"/api/runs/{run_id}/answer", json={"keep": False})
    assert ended.status_code == 409 and "ended already (finished)" in ended.json()["error"]

    modified = await _json(
        await api.post("/api/runs/sync-modified", json={"mapping": "CUSTOMER"}), 202
    )
    done = await ops.wait(modified["run_id"], timeout_s=60)
    assert done.run.status == "finished" and done.run.mappings == ["CUSTOMER"]
    runs = await _json(await api.get("/api/runs", params={"limit": 5}))
    assert [r["run_id"] for r in runs[:2]] == [modified["run_id"], run_id]


async def test_an_unconditional_full_sync_is_started_and_its_jobs_are_unconditional(
    admin: Admin, ops: Operations
) -> None:
    first = await ops.wait(await ops.full_sync(mappings=["CURRENCY"]), timeout_s=120)
    assert first.run.status == "finished", first.run.message
    accepted = await _json(
        await admin.client.post(
            "/api/runs/full-sync", json={"mappings": ["CURRENCY"], "unconditional": True}
        ),
        202,
    )
    done = await ops.wait(accepted["run_id"], timeout_s=120)
    assert done.run.status == "finished", done.run.message
    assert done.run.options["unconditional"] is True
    rows = await admin.stack.pool.fetch(
        "SELECT run_id::text AS run_id, unconditional FROM jobs WHERE run_id IS NOT NULL"
    )
    assert {(r["run_id"], r["unconditional"]) for r in rows} == {
        (first.run.run_id, False),
        (accepted["run_id"], True),
    }
    # Every coupled currency was compared with its counterpart, none written.
    [job] = done.jobs
    assert job.counts["unchanged"] == len(await admin.stack.couplings("CURRENCY")) > 0
    assert job.counts["modified"] == 0


async def test_a_full_sync_that_asks_is_answered_over_the_api(admin: Admin) -> None:
    api = admin.client
    accepted = await _json(
        await api.post("/api/runs/full-sync", json={"mappings": ["CURRENCY"], "ask": True}), 202
    )
    run_id = accepted["run_id"]

    async def asking() -> dict[str, Any] | None:
        run = await _json(await api.get(f"/api/runs/{run_id}"))
        return run if run["question"] or run["done"] else None

    run = await wait_for(asking, timeout_s=120, what="the full sync to ask")
    assert run["question"] == "keep_only_coupled_cleared", run["message"]
    listed = await _json(await api.get("/api/runs", params={"limit": 1}))
    assert listed[0]["question"] == "keep_only_coupled_cleared"
    bad = await api.post(f"/api/runs/{run_id}/answer", json={"keep": "maybe"})
    assert bad.status_code == 400 and "keep" in bad.json()["error"]
    answered = await _json(await api.post(f"/api/runs/{run_id}/answer", json={"keep": False}))
    assert answered["run_id"] == run_id and answered["question"] is None
    twice = await api.post(f"/api/runs/{run_id}/answer", json={"keep": True})
    assert twice.status_code == 409 and "answered already" in twice.json()["error"]

    async def finished() -> dict[str, Any] | None:
        run = await _json(await api.get(f"/api/runs/{run_id}"))
        return run if run["done"] else None

    done = await wait_for(finished, timeout_s=60, what="the answered full sync to finish")
    assert done["status"] == "finished" and done["question"] is None
    assert done["message"] == "sync only coupled records restored on CURRENCY (answered)"
    currency = await _json(await api.get("/api/mappings/CURRENCY"))
    assert currency["sync_only_coupled"] is True


GHOST = str(uuid.uuid4())
BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # method, path, request options, status, a word the message must contain
    ("GET", "/api/jobs", {"params": {"limit": "many"}}, 400, "limit"),
    ("GET", "/api/jobs", {"params": {"limit": "0"}}, 400, "limit"),
    ("GET", "/api/jobs", {"params": {"run": "not-a-guid"}}, 400, "run"),
    ("GET", "/api/jobs", {"params": {"status": "sleeping"}}, 400, "status"),
    ("GET", "/api/jobs", {"params": {"maping": "CUSTOMER"}}, 400, "maping"),
    ("GET", "/api/jobs", {"params": [("mapping", "A"), ("mapping", "B")]}, 400, "mapping"),
    ("GET", "/api/jobs/123", {}, 400, "job_id"),
    ("GET", "/api/jobs/123/errors", {}, 400, "job_id"),
    ("GET", f"/api/jobs/{uuid.uuid4()}", {}, 404, "no job"),
    ("GET", "/api/runs/abc", {}, 400, "run_id"),
    ("GET", f"/api/runs/{uuid.uuid4()}", {}, 404, "no run"),
    ("GET", "/api/runs", {"params": {"limit": "-1"}}, 400, "limit"),
    ("POST", "/api/runs/abc/cancel", {}, 400, "run_id"),
    ("POST", f"/api/runs/{uuid.uuid4()}/cancel", {}, 404, "no run"),
    ("POST", "/api/runs/abc/answer", {"json": {"keep": True}}, 400, "run_id"),
    ("POST", f"/api/runs/{uuid.uuid4()}/answer", {"json": {"keep": True}}, 404, "no run"),
    ("POST", f"/api/runs/{uuid.uuid4()}/answer", {"json": {}}, 400, "keep"),
    ("POST", f"/api/runs/{uuid.uuid4()}/answer", {"json": {"keep": "yes"}}, 400, "keep"),
    ("POST", f"/api/runs/{uuid.uuid4()}/answer", {"json": {"keep": 1}}, 400, "keep"),
    ("POST", f"/api/runs/{uuid.uuid4()}/answer", {"content": b"{keep"}, 400, "JSON"),
    ("POST", "/api/runs/full-sync", {"json": {"ask": "maybe"}}, 400, "ask"),
    ("GET", "/api/mappings/NOPE", {}, 404, "NOPE"),
    ("GET", "/api/couplings", {"params": {"limit": "x"}}, 400, "limit"),
    ("GET", "/api/lag/history", {"params": {"minutes": "600"}}, 400, "minutes"),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": {}}, 400, "nothing to change"),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": {"direction": "sideways"}}, 400, "direction"),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": {"table_filter": "city eq"}}, 400, "position 7"),
    (
        "PATCH",
        "/api/mappings/CUSTOMER",
        {"json": {"table_filter": "colour eq 1"}},
        400,
        "unknown property 'colour'",
    ),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": {"colour": "red"}}, 400, "colour"),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": {"sync_only_coupled": "maybe"}}, 400, "sync_only"),
    ("PATCH", "/api/mappings/CUSTOMER", {"content": b"{not json"}, 400, "JSON"),
    ("PATCH", "/api/mappings/CUSTOMER", {"json": [1, 2]}, 400, "object"),
    ("PATCH", "/api/mappings/NOPE", {"json": {"direction": "bidirectional"}}, 404, "NOPE"),
    ("POST", "/api/couplings", {"json": {"mapping": "CUSTOMER"}}, 400, "bc_id"),
    (
        "POST",
        "/api/couplings",
        {"json": {"mapping": "CUSTOMER", "bc_id": "x", "dataverse_id": str(uuid.uuid4())}},
        400,
        "bc_id",
    ),
    (
        "POST",
        "/api/couplings",
        {
            "json": {
                "mapping": "NOPE",
                "bc_id": str(uuid.uuid4()),
                "dataverse_id": str(uuid.uuid4()),
            }
        },
        404,
        "NOPE",
    ),
    ("DELETE", "/api/couplings/CUSTOMER/sap/1", {}, 400, "side"),
    ("POST", "/api/records/CUSTOMER/sap/1/sync", {}, 400, "side"),
    ("POST", f"/api/records/NOPE/bc/{uuid.uuid4()}/sync", {}, 404, "NOPE"),
    ("POST", f"/api/records/CUSTOMER/bc/{GHOST}/sync", {}, 404, GHOST),
    ("DELETE", "/api/couplings/CUSTOMER/bc/1", {}, 400, "record_id"),
    ("POST", "/api/runs/full-sync", {"json": {"mappings": ["NOPE"]}}, 400, "NOPE"),
    ("POST", "/api/runs/full-sync", {"json": {"mappings": "CUSTOMER"}}, 400, "mappings"),
    ("POST", "/api/runs/full-sync", {"json": {"unconditional": "maybe"}}, 400, "unconditional"),
    ("POST", "/api/runs/sync-modified", {"json": {"mapping": "NOPE"}}, 400, "NOPE"),
    ("POST", "/api/runs/couple-by-match", {"json": {"mappings": ["NOPE"]}}, 400, "NOPE"),
    (
        "POST",
        "/api/runs/couple-by-match",
        {"json": {"mappings": ["CONTACTS"]}},
        400,
        "CONTACTS has no match fields",
    ),
    ("POST", "/api/runs/couple-by-match", {"json": {"create_new": "maybe"}}, 400, "create_new"),
    ("POST", "/api/runs/sync-modified", {"json": {"mapping": 7}}, 400, "mapping"),
    (
        "POST",
        "/api/records/CUSTOMER/couple-by-match",
        {"json": {"side": "bc", "ids": [GHOST]}},
        404,
        GHOST,
    ),
    (
        "POST",
        "/api/records/CUSTOMER/couple-by-match",
        {"json": {"side": "bc", "ids": []}},
        400,
        "ids",
    ),
    (
        "POST",
        "/api/records/CONTACTS/couple-by-match",
        {"json": {"side": "bc", "ids": [GHOST]}},
        400,
        "CONTACTS has no match fields",
    ),
    (
        "POST",
        "/api/records/NOPE/couple-by-match",
        {"json": {"side": "dataverse", "ids": [GHOST]}},
        404,
        "NOPE",
    ),
]


async def test_invalid_input_gets_4xx_naming_what_was_wrong(admin: Admin) -> None:
    for method, path, options, status, word in BAD_REQUESTS:
        r = await admin.client.request(method, path, **options)
        assert r.status_code == status, f"{method} {path} {options}: {r.status_code} {r.text}"
        assert r.headers["content-type"] == "application/json"
        assert word in r.json()["error"], f"{method} {path}: {r.json()}"
    # Nothing above started a run or changed a mapping.
    assert await admin.stack.pool.fetchval("SELECT count(*) FROM runs") == 0
    mapping = await _json(await admin.client.get("/api/mappings/CUSTOMER"))
    assert mapping["direction"] == "bidirectional" and mapping["table_filter"] is not None


async def test_the_openapi_document_is_valid_and_covers_every_route(admin: Admin) -> None:
    document = await _json(await admin.client.get("/openapi.json"))
    validate(document)
    assert document["openapi"].startswith("3.")
    operations = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert ("POST", "/api/runs/full-sync") in operations
    assert ("POST", "/api/runs/{run_id}/answer") in operations
    assert ("GET", "/api/jobs/{job_id}/errors") in operations
    assert ("PATCH", "/api/mappings/{name}") in operations
    assert {
        ("GET", "/api/errors"),
        ("POST", "/api/errors/retry"),
        ("POST", "/api/errors/restore"),
        ("POST", "/api/errors/delete-records"),
        ("POST", "/api/errors/delete-couplings"),
        ("POST", "/api/errors/find-deleted"),
    } <= operations
    delete_records = document["paths"]["/api/errors/delete-records"]["post"]
    body = delete_records["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][body.rsplit("/", 1)[1]]
    assert "confirm" in schema["properties"] and "ids" in schema["properties"]
    assert {"400", "401", "409", "503"} <= set(delete_records["responses"])
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert "409" in document["paths"]["/api/runs/full-sync"]["post"]["responses"]
    body = document["paths"]["/api/runs/full-sync"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    assert schema["properties"]["unconditional"]["type"] == "boolean"
    assert schema["properties"]["unconditional"]["default"] is False
    couple = document["paths"]["/api/couplings"]["post"]["responses"]
    assert {"201", "404", "409", "503"} <= set(couple)
