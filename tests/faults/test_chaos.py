"""The fault run and what must hold after it: nothing lost, nothing duplicated,
no echo, counters that add up, poison dead-lettered; no secret in any log;
the admin API closed to anyone without its token."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.faults.chaos import Figures
from tests.faults.conftest import FULL
from tests.faults.infra import FaultInfra
from tests.faults.pipeline import Pipeline
from tests.faults.schedule import KINDS, Plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(4 * 3600 if FULL else 480)]


def test_nothing_lost_duplicated_or_echoed(
    outcome: Figures, pipeline: Pipeline, plan: Plan, capsys: pytest.CaptureFixture[str]
) -> None:
    report = outcome.render()
    with capsys.disabled():
        print(f"\n{report}\n(logs and figures in {pipeline.run_dir})")
    assert outcome.settle is not None and outcome.settle.settled, report
    assert outcome.lost == 0, report
    assert outcome.duplicated == 0, report
    assert not outcome.echoes, report
    assert not outcome.findings.dead_letters, report
    assert not outcome.findings.rejected, report
    assert outcome.ledger.total >= plan.min_changes, report
    short = {k: outcome.faults[k] for k in KINDS if outcome.faults[k] < plan.min_per_kind}
    assert not short, f"too few faults injected: {short}"


def test_a_standby_takes_over_each_time_the_holder_dies(outcome: Figures) -> None:
    """Each capture holder killed (``kill -9``, or at its fault point) is
    replaced by the side's standby within the lease's bound, ttl + renew
    after its last renewal, plus the suite's margin; and no two captures of
    a side ever held the lease at once."""
    report = outcome.render()
    deaths = (
        outcome.faults["kill -9 capture"]
        + outcome.faults["crash capture between publish and checkpoint"]
    )
    assert deaths and len(outcome.takeovers) == deaths, report
    assert all(t.in_time for t in outcome.takeovers), report
    assert all(outcome.lease_takes.values()), report
    assert not outcome.lease_problems, report


async def test_job_counters_add_up_to_the_effects_seen(
    outcome: Figures, pipeline: Pipeline
) -> None:
    assert not outcome.findings.counters, outcome.render()
    # An announced write is resolved by the attempt that commits it.
    assert not await pipeline.query("SELECT * FROM write_intents")


def test_no_secret_in_any_log(
    outcome: Figures, pipeline: Pipeline, fault_infra: FaultInfra
) -> None:
    """Every service, emulator and CLI log of the fault run, searched for every
    secret the processes were given."""
    logs = pipeline.supervisor.log_files()
    assert len(logs) >= 8, logs
    leaks = []
    for path in logs:
        text = path.read_text(errors="replace")
        for name, secret in fault_infra.secrets.all().items():
            for match in re.finditer(re.escape(secret), text):
                start = text.rfind("\n", 0, match.start()) + 1
                leaks.append(f"{path.name}: the {name}: {text[start : match.end() + 80][:300]}")
    assert not leaks, "\n".join(leaks)


_PROTECTED = (
    ("GET", "/api/mappings"),
    ("GET", "/api/jobs"),
    ("GET", "/api/couplings"),
    ("GET", "/api/lag"),
    ("GET", "/api/runs"),
    ("GET", "/metrics"),
    ("PATCH", "/api/mappings/CUSTOMER"),
    ("POST", "/api/runs/sync-modified"),
    ("POST", "/api/runs/full-sync"),
    # A fixed id, not a drawn one: it names the test, and pytest-xdist's workers
    # must collect the same names.
    ("DELETE", "/api/couplings/CUSTOMER/bc/0144d8ce-e7b5-4463-950b-d3f128f2ed32"),
)


@pytest.mark.parametrize(("method", "path"), _PROTECTED)
async def test_admin_api_refuses_a_missing_or_wrong_token(
    outcome: Figures, pipeline: Pipeline, fault_infra: FaultInfra, method: str, path: str
) -> None:
    token = fault_infra.secrets.admin_token
    wrong: tuple[dict[str, str], ...] = (
        {},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
    )
    runs_before = await pipeline.query("SELECT count(*) AS n FROM runs")
    async with httpx.AsyncClient(base_url=pipeline.admin_url, timeout=10) as client:
        for headers in wrong:
            response = await client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (headers, response.text)
            assert token not in response.text
        # The same server lets its token through: the 401s above are its answer,
        # not a server that is down or a path that does not exist.
        allowed = await client.get("/api/mappings", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200, allowed.text
    assert await pipeline.query("SELECT count(*) AS n FROM runs") == runs_before
