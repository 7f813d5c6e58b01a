"""The operator commands run as separate processes against a real stack:
``lag`` (table, JSON, watch), ``full-sync --wait`` with its progress on a
terminal and off one, ``run admin``, and how ``couple``, ``uncouple`` and the
other commands refuse what the application layer refuses."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import sys
import uuid

import httpx
import pytest

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.runtime.operations import Operations
from tests.admin.conftest import ADMIN_TOKEN, Admin, free_port, run_cli
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

MAPPINGS = load_mapping_file(default_mapping_file())[1].names()


async def test_lag_as_a_table_and_watched_as_json_lines(admin: Admin, ops: Operations) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    table = await run_cli(admin, "lag")
    assert table.code == 0, table.stderr
    assert "Consumer lag" in table.stdout and "Lag per mapping" in table.stdout
    for name in MAPPINGS:
        assert f"tablesync.apply.{name}" in table.stdout

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "lag",
        "--watch",
        "--json",
        "--interval",
        "0.3",
        env=admin.cli_environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        reads = [
            json.loads(await asyncio.wait_for(process.stdout.readline(), timeout=60))
            for _ in range(2)
        ]
    finally:
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    assert code == 0
    assert reads[0]["read_at"] < reads[1]["read_at"]
    assert {m["mapping"] for m in reads[1]["mappings"]} == set(MAPPINGS)


async def test_full_sync_wait_prints_plain_lines_when_not_a_terminal(admin: Admin) -> None:
    result = await run_cli(admin, "full-sync", "--wait", "--timeout", "120")
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(MAPPINGS)]
    assert any(line.split()[2] == "finished" for line in lines)
    assert {line.split()[0] for line in lines} == set(MAPPINGS)
    assert "\x1b[" not in result.stderr, "no terminal control codes off a terminal"
    assert ": finished" in result.stdout
    listed = await run_cli(admin, "runs", "--json")
    assert listed.code == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert (run["kind"], run["status"], run["mappings"]) == ("full", "finished", "all")
    ended = await run_cli(admin, "cancel", run["run_id"])
    assert ended.code == 2 and f"run {run['run_id']} ended already (finished)" in ended.stderr
    ghost = await run_cli(admin, "cancel", str(uuid.uuid4()))
    assert ghost.code == 2 and "no run" in ghost.stderr


async def test_full_sync_wait_draws_a_bar_per_mapping_on_a_terminal(admin: Admin) -> None:
    # The setting said at the start: on a terminal the run would ask at its end.
    command = shlex.join(
        [sys.executable, "-m", "tablesync.cli", "full-sync", "--wait", "--restore-create-setting"]
    )
    # `script` runs the command on a pseudo-terminal, as an operator's shell would.
    process = await asyncio.create_subprocess_exec(
        "script",
        "--quiet",
        "--return",
        "--command",
        command,
        "/dev/null",
        env={**admin.cli_environment(), "COLUMNS": "160", "TERM": "xterm"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    text = out.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    for name in MAPPINGS:
        finished = [line for line in text.splitlines() if name in line and "100%" in line]
        assert finished, f"no finished bar for {name}"
        assert "finished" in finished[-1]
    assert "━" in text


async def test_run_admin_serves_until_terminated_and_refuses_a_taken_port(admin: Admin) -> None:
    port = free_port()
    env = admin.stack.environment(TABLESYNC_ADMIN_PORT=str(port), TABLESYNC_ADMIN_TOKEN=ADMIN_TOKEN)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "run",
        "admin",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def up() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"run admin exited with {process.returncode}")
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, timeout_s=60, what="`tablesync run admin` to answer")
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            mappings = (await client.get("/api/mappings", headers=headers)).json()
            assert [m["name"] for m in mappings] == list(MAPPINGS)

        second = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tablesync.cli",
            "run",
            "admin",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in err.decode()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()[-2000:]
    assert ADMIN_TOKEN not in err.decode()


async def test_couple_and_uncouple_refuse_by_name_with_exit_code_2(admin: Admin) -> None:
    bc_1, bc_2 = [c["id"] for c in (await admin.stack.bc_rows("customers"))[:2]]
    dv_1 = (await admin.stack.dv_rows("accounts"))[0]["accountid"]
    ghost = str(uuid.uuid4())

    missing = await run_cli(admin, "couple", "CUSTOMER", "--bc-id", bc_1, "--dataverse-id", ghost)
    assert missing.code == 2
    assert missing.stderr.strip().endswith(f"error: dataverse has no accounts record {ghost}")
    coupled = await run_cli(admin, "couple", "CUSTOMER", "--bc-id", bc_1, "--dataverse-id", dv_1)
    assert coupled.code == 0, coupled.stderr
    assert coupled.stdout.strip() == f"coupled CUSTOMER: bc {bc_1} <-> dataverse {dv_1}"
    taken = await run_cli(admin, "couple", "CUSTOMER", "--bc-id", bc_2, "--dataverse-id", dv_1)
    assert taken.code == 2
    assert f"dataverse record {dv_1} is already coupled to bc record {bc_1}" in taken.stderr
    assert (await admin.stack.couplings("CUSTOMER")).get(bc_1) == dv_1

    removed = await run_cli(admin, "uncouple", "CUSTOMER", "--dataverse-id", dv_1)
    assert removed.code == 0, removed.stderr
    assert removed.stdout.strip() == f"uncoupled CUSTOMER: bc {bc_1} <-> dataverse {dv_1}"
    again = await run_cli(admin, "uncouple", "CUSTOMER", "--bc-id", bc_1)
    assert again.code == 2
    assert again.stderr.strip().endswith(f"error: CUSTOMER: bc record {bc_1} is not coupled")

    unknown = await run_cli(admin, "full-sync", "--mapping", "NOPE")
    assert unknown.code == 2 and "unknown mapping 'NOPE' (known: CURRENCY" in unknown.stderr
    nothing = await run_cli(admin, "mappings", "set", "CUSTOMER")
    assert nothing.code == 2 and "nothing to change" in nothing.stderr
    assert await admin.stack.pool.fetchval("SELECT count(*) FROM runs") == 0


async def test_jobs_still_lists_and_jobs_prune_deletes_only_what_ended_long_enough_ago(
    admin: Admin, ops: Operations
) -> None:
    progress = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert progress.run.status == "finished", progress.run.message
    listed = await run_cli(admin, "jobs", "--json", "--run", progress.run.run_id)
    assert listed.code == 0, listed.stderr
    assert {j["job_id"] for j in json.loads(listed.stdout)} == {j.job_id for j in progress.jobs}

    kept = await run_cli(admin, "jobs", "prune", "--json")
    assert kept.code == 0, kept.stderr
    assert {k: v for k, v in json.loads(kept.stdout).items() if k != "before"} == {
        "jobs": 0,
        "errors": 0,
        "runs": 0,
        "record_log": 0,
    }
    refused = await run_cli(admin, "jobs", "prune", "--older-than", "0")
    assert refused.code == 2 and "--older-than 0 is not a number of days above 0" in refused.stderr

    pool = admin.stack.pool

    async def ended_a_second_ago() -> bool:
        return bool(
            await pool.fetchval(
                "SELECT now() - max(finished_at) > interval '1 second' FROM jobs "
                "WHERE run_id = $1::uuid",
                progress.run.run_id,
            )
        )

    await wait_for(ended_a_second_ago, timeout_s=30, what="the run's jobs to be a second old")
    run_jobs = [uuid.UUID(j.job_id) for j in progress.jobs]
    logged = "SELECT count(*) FROM record_log WHERE job_id = ANY($1::uuid[])"
    run_logged = await pool.fetchval(logged, run_jobs)
    # 0.00001 days: 0.864 s.
    pruned = await run_cli(admin, "jobs", "prune", "--older-than", "0.00001")
    assert pruned.code == 0, pruned.stderr
    said = re.match(
        r"pruned (\d+) jobs, (\d+) job errors, (\d+) record log rows and (\d+) runs "
        "that ended before ",
        pruned.stdout,
    )
    assert said is not None, pruned.stdout
    # Continuous intervals closed since may go too; the run's jobs must, with
    # the record log rows of what they counted.
    assert int(said[1]) >= len(progress.jobs) and int(said[4]) == 1
    assert run_logged > 0 and int(said[3]) >= run_logged
    assert await pool.fetchval(logged, run_jobs) == 0
    assert await pool.fetchval("SELECT count(*) FROM runs") == 0
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM jobs WHERE run_id = $1::uuid", progress.run.run_id
        )
        == 0
    )
