"""The benches at smoke size, so that they keep running as the engine changes.

Only that every bench completes and reports every figure is asserted: speed
depends on the machine and on what else runs on it, and the targets are read
by people from ``make bench``, never enforced here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench.data import CURRENCIES, DATAVERSE_ROWS
from bench.deploy import Infra
from bench.fullsync import SERVICES
from bench.main import BENCHES, SMOKE, run_benches
from bench.pyspy import py_spy_path

from tests.conftest import InfraEndpoints

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
async def test_every_bench_completes_and_reports_every_figure(
    infra: InfraEndpoints, tmp_path: Path
) -> None:
    results = await run_benches(
        SMOKE, BENCHES, Infra(infra.kafka_bootstrap_servers, infra.database_dsn), out=tmp_path
    )

    # apilimits runs with each of SMOKE.apilimits_users, one result for each.
    extra = [f"apilimits-{u}users" for u in SMOKE.apilimits_users if u != 1]
    assert sorted(r.name for r in results) == sorted([*BENCHES, *extra])
    for result in results:
        summary = result.summary()
        missing = [f.label for f in result.figures if summary[f.key]["median"] is None]
        assert not missing, f"{result.name} did not report {missing}"
        written = json.loads((tmp_path / f"{result.name}.smoke.json").read_text())
        assert written["figures"].keys() == summary.keys()
        assert written["machine"]["cpus"] >= 1
        assert written["versions"]["postgres"]
    by_name = {r.name: r for r in results}
    fullsync = by_name["fullsync"].runs[0]
    assert fullsync["run_status"] == "finished"
    assert fullsync["problems"] == {"failed": 0, "pending": 0, "skipped": 0}
    # Customers and contacts, the currencies, and a salesperson per Dataverse user.
    expected = 2 * SMOKE.records_per_table + CURRENCIES + DATAVERSE_ROWS
    assert fullsync["figures"]["records"] == expected
    assert by_name["limit"].runs[0]["stored"] == fullsync["figures"]["records"]
    # Only the apilimits bench runs the emulators under the real limits.
    assert all("real_limits" not in r for r in fullsync["emulator_requests"].values())
    assert fullsync["own_cpu"].keys() == SERVICES.keys()
    limited = by_name["apilimits"].runs[0]
    assert limited["run_status"] == "finished"
    assert limited["problems"] == {"failed": 0, "pending": 0, "skipped": 0}
    assert limited["figures"]["records"] == 2 * SMOKE.apilimits_records_per_table + (
        CURRENCIES + DATAVERSE_ROWS
    )
    for side in ("bc", "dataverse"):
        real = limited["emulator_requests"][side]["real_limits"]
        assert real["execution_s"] > 0
    # Every record the sync wrote to Dataverse was charged its server cost.
    assert limited["emulator_requests"]["dataverse"]["real_limits"]["records_written"] >= (
        2 * SMOKE.apilimits_records_per_table
    )
    assert 0 < limited["figures"]["fraction_of_ceiling"] <= 1
    for users in SMOKE.apilimits_users:
        name = "apilimits" if users == 1 else f"apilimits-{users}users"
        # Every user of each side sent requests: the connector spread them.
        assert by_name[name].runs[0]["figures"]["users_used"] == users
    assert by_name["continuous"].runs[0]["figures"]["unseen"] == 0
    profile = by_name["profile"].runs[0]
    if py_spy_path() is None:
        assert "not installed" in profile["profile_errors"]["apply"]
    else:
        wanted = {"apply", "capture-bc", "emulator-bc", "emulator-dataverse"}
        assert wanted <= profile["profiles"].keys(), profile["profile_errors"]
