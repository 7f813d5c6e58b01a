"""The record log on the real stack: a BC customer created, changed and
synchronized again, read with ``tablesync record-log`` in its own process and
from the admin API, each decision with a job ``tablesync jobs`` lists."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from tests.admin import conftest as admin_stack
from tests.admin.conftest import Admin, run_cli
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

# The admin tests' stack, its admin server serving, and the CLI run against it.
admin = admin_stack.admin
ops = admin_stack.ops


async def _cli_json(a: Admin, *args: str) -> Any:
    result = await run_cli(a, *args, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _at(entry: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["at"])


def _decisions(entries: list[dict[str, Any]]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(e["job_id"], e["source_side"], tuple(e["decision"])) for e in entries]


async def test_a_customers_decisions_are_logged_newest_first_in_the_jobs_they_counted_in(
    admin: Admin, ops: Any
) -> None:
    stack = admin.stack
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    customer = await stack.bc_post("customers", {"displayName": "Log Co", "number": "C90077"})
    bc_id = str(customer["id"])

    async def coupled() -> str | None:
        return (await stack.couplings("CUSTOMER")).get(bc_id)

    dv_id = await wait_for(coupled, timeout_s=90, what="the new customer to be created")
    await stack.bc_patch("customers", bc_id, {"displayName": "Log Co Renamed"})

    async def renamed() -> bool:
        rows = await stack.dv_rows("accounts", f"?$filter=accountid eq {dv_id}")
        return bool(rows) and rows[0]["name"] == "Log Co Renamed"

    await wait_for(renamed, timeout_s=90, what="the change to reach Dataverse")
    synced = await _cli_json(admin, "sync-record", "CUSTOMER", "--bc-id", bc_id)

    log = "record-log", "--mapping", "CUSTOMER", "--bc-id", bc_id
    entries: list[dict[str, Any]] = await _cli_json(admin, *log)
    moments = [_at(e) for e in entries]
    assert moments == sorted(moments, reverse=True), "newest first"
    listed = await _cli_json(admin, "jobs", "--mapping", "CUSTOMER", "--limit", "500")
    jobs = {j["job_id"]: j for j in listed}
    assert {e["job_id"] for e in entries} <= set(jobs), "each in a job `tablesync jobs` lists"
    for e in entries:
        assert e["mapping"] == "CUSTOMER"
        assert {e["source_id"], e["counterpart_id"]} <= {bc_id, dv_id}
        # Counted where it is logged: the job's counters hold what it decided.
        for name in e["decision"]:
            assert jobs[e["job_id"]][name] >= 1, (e, jobs[e["job_id"]])

    ours = [e for e in entries if e["source_side"] == "bc"]
    [inserted] = [e for e in ours if e["decision"] == ["inserted"]]
    assert (inserted["direction"], inserted["counterpart_id"]) == ("to_integration", dv_id)
    assert {"accountnumber", "name"} <= set(inserted["fields"])
    assert jobs[inserted["job_id"]]["kind"] == "continuous"
    [modified] = [e for e in ours if e["decision"] == ["modified"]]
    assert modified["direction"] == "to_integration" and "name" in modified["fields"]
    assert "accountnumber" not in modified["fields"], "only what changed is written"
    assert _at(modified) > _at(inserted)
    assert entries.index(modified) < entries.index(inserted)
    # The operator's synchronize, after the change: compared in each direction,
    # counted in its own jobs; from BC there is nothing left to write.
    again = [e for e in entries if e["job_id"] in synced["jobs"]]
    assert {e["source_side"] for e in again} == {"bc", "dataverse"}
    [from_bc] = [e for e in again if e["source_side"] == "bc"]
    assert (from_bc["decision"], from_bc["direction"], from_bc["fields"]) == (
        ["unchanged"],
        None,
        [],
    )
    assert min(_at(e) for e in again) > _at(modified)
    for e in entries:
        assert "Log Co" not in json.dumps(e), "names of fields, never their values"

    # The admin API answers the same, newer rows (a late echo) ahead.
    reply = await admin.client.get(
        "/api/records/CUSTOMER/log", params={"side": "bc", "id": bc_id.upper()}
    )
    assert reply.status_code == 200, reply.text
    served = reply.json()
    assert _decisions(served[len(served) - len(entries) :]) == _decisions(entries)
    by_dv = await admin.client.get(
        "/api/records/CUSTOMER/log", params={"side": "dataverse", "id": dv_id, "limit": 1}
    )
    assert by_dv.status_code == 200 and len(by_dv.json()) == 1


async def test_record_log_refuses_what_it_cannot_read_and_says_when_it_has_nothing(
    admin: Admin,
) -> None:
    api = admin.client
    for params, status, named in (
        ({"side": "sap", "id": "0" * 32}, 400, "side"),
        ({"side": "bc", "id": "C00010"}, 400, "id"),
        ({"side": "bc"}, 400, "id"),
        ({"side": "bc", "id": "0" * 32, "limit": "0"}, 400, "limit"),
        ({"side": "bc", "id": "0" * 32, "and": "more"}, 400, "and"),
    ):
        r = await api.get("/api/records/CUSTOMER/log", params=params)
        assert (r.status_code, named in r.json()["error"]) == (status, True), (params, r.text)
    unknown = await api.get("/api/records/NOPE/log", params={"side": "bc", "id": "0" * 32})
    assert unknown.status_code == 404
    assert "unknown mapping 'NOPE' (known: CURRENCY" in unknown.json()["error"]

    ghost = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    nothing = await run_cli(admin, "record-log", "--mapping", "CUSTOMER", "--dataverse-id", ghost)
    assert nothing.code == 0, nothing.stderr
    assert f"CUSTOMER: no record log for dataverse record {ghost}" in nothing.stdout
    empty = await run_cli(admin, "record-log", "--mapping", "CUSTOMER", "--bc-id", ghost, "--json")
    assert (empty.code, json.loads(empty.stdout)) == (0, [])
    refused = await run_cli(admin, "record-log", "--mapping", "NOPE", "--bc-id", ghost)
    assert refused.code == 2 and "unknown mapping 'NOPE' (known: CURRENCY" in refused.stderr
    both = await run_cli(
        admin, "record-log", "--mapping", "CUSTOMER", "--bc-id", ghost, "--dataverse-id", ghost
    )
    assert both.code == 2 and "exactly one of --bc-id and --dataverse-id" in both.stderr
    bad = await run_cli(admin, "record-log", "--mapping", "CUSTOMER", "--bc-id", "C00010")
    assert bad.code == 2 and "bc record id 'C00010' is not a GUID" in bad.stderr
    over = await run_cli(
        admin, "record-log", "--mapping", "CUSTOMER", "--bc-id", ghost, "--limit", "0"
    )
    assert over.code == 2 and "limit 0 is not between 1 and 1000" in over.stderr
