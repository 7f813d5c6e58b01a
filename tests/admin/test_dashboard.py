"""The dashboard in headless Chromium against a real stack: the job table of a
real full synchronization, a run started from the page with its progress, the
errors panel's actions (retry, find deleted couplings, restore, delete record
behind its confirmation) with their jobs in the job log, and screenshots in
test-artifacts/ to look at."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.runtime.operations import Operations
from tests.admin.conftest import ADMIN_TOKEN, Admin
from tests.holds import hold_first_job
from tests.integration.stack import wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# The shipped mappings, in their dependency order: the page lists each.
DEFAULT_NAMES = list(load_mapping_file(default_mapping_file())[1].names())
EXPECT_TIMEOUT_MS = 60_000
# Every part of the page comes from a request of its own (jobs, mappings, lag
# from the broker): on a loaded machine any of them may take more than the
# default 5 s. A met expectation returns at once, so waiting longer costs nothing.
expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture(scope="session")
def chromium() -> str:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


async def _page(browser: Browser) -> Page:
    page = await browser.new_page(viewport={"width": 1440, "height": 1200})
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if msg.type == "error" else None,
    )
    page.problems = problems  # type: ignore[attr-defined]
    return page


async def test_the_dashboard_shows_a_real_run_and_starts_another(
    admin: Admin, ops: Operations, browser: Browser
) -> None:
    first = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert first.run.status == "finished", first.run.message
    page = await _page(browser)
    await page.goto(f"{admin.url}/?token={ADMIN_TOKEN}")
    # The token left the address bar as soon as the page kept it.
    assert "token" not in page.url

    jobs = page.locator(f'#jobs-table tbody tr[data-run-id="{first.run.run_id}"]')
    await expect(jobs).to_have_count(len(first.jobs), timeout=EXPECT_TIMEOUT_MS)
    for job in first.jobs:
        row = page.locator(f'#jobs-table tr[data-job-id="{job.job_id}"]')
        await expect(row).to_contain_text(job.mapping)
        await expect(row).to_contain_text(str(job.counts["inserted"] or job.counts["unchanged"]))
    customer = next(
        j for j in first.jobs if (j.mapping, j.direction) == ("CUSTOMER", "to_integration")
    )
    await expect(
        page.locator(f'#jobs-table tr[data-job-id="{customer.job_id}"] .count.inserted')
    ).to_have_text(str(customer.counts["inserted"]))
    mappings = page.locator("#mappings-table tbody tr")
    # The mapping table comes from a request of its own, apart from the jobs'.
    await expect(mappings).to_have_count(len(DEFAULT_NAMES), timeout=EXPECT_TIMEOUT_MS)
    # The row's last job is this run's, however many continuous intervals the
    # run's own writes echoed into since; those have a line of their own.
    last_job = page.locator('#mappings-table tr[data-mapping="CUSTOMER"] .last-job-head')
    await expect(last_job).to_have_attribute(
        "data-run-id", first.run.run_id, timeout=EXPECT_TIMEOUT_MS
    )
    await expect(last_job.locator(".chip")).to_have_text("finished")
    await expect(page.locator("#lag-chart svg")).to_be_visible()

    # A job's errors open below the table.
    await page.locator(f'#jobs-table tr[data-job-id="{customer.job_id}"]').click()
    await expect(page.locator("#errors-card")).to_be_visible()
    await expect(page.locator("#errors-title")).to_contain_text("CUSTOMER")

    # Start a full synchronization from the page and follow it to its end.
    await page.locator("#full-sync").click()
    await page.locator("#confirm-start").click()
    panel = page.locator("#run-panel")
    await expect(panel).to_be_visible(timeout=EXPECT_TIMEOUT_MS)
    # At its end the run asks; restoring leaves every mapping as it was.
    await expect(page.locator("#keep-question")).to_be_visible(timeout=120_000)
    await page.locator("#keep-restore").click()
    await expect(panel).to_have_attribute("data-status", "finished", timeout=120_000)
    await expect(page.locator("#run-meta")).to_contain_text(
        f"sync only coupled records restored on {', '.join(DEFAULT_NAMES)} (answered)"
    )
    run_id = await panel.get_attribute("data-run-id")
    assert run_id is not None and run_id != first.run.run_id
    progress = await ops.progress(run_id)
    assert progress is not None and progress.run.status == "finished"
    assert progress.run.requested_by == "admin"
    assert progress.run.options["keep_answer"] is False
    steps = page.locator("#run-steps .step")
    await expect(steps).to_have_count(len(DEFAULT_NAMES))
    await expect(page.locator('#run-steps .step[data-status="finished"]')).to_have_count(
        len(DEFAULT_NAMES)
    )
    await expect(page.locator(f'#jobs-table tbody tr[data-run-id="{run_id}"]')).to_have_count(
        len(progress.jobs), timeout=EXPECT_TIMEOUT_MS
    )
    # The page refreshes when the run is done: the row now shows the new run.
    await expect(last_job).to_have_attribute("data-run-id", run_id, timeout=EXPECT_TIMEOUT_MS)
    await expect(last_job.locator(".chip")).to_have_text("finished")

    await expect(page.locator("#toasts .toast")).to_have_count(0, timeout=15_000)
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert page.problems == []  # type: ignore[attr-defined]


async def _only_coupled(admin: Admin) -> dict[str, bool]:
    mappings = (await admin.client.get("/api/mappings")).json()
    return {m["name"]: m["sync_only_coupled"] for m in mappings}


async def test_the_question_at_the_end_of_a_full_sync_is_answered_from_the_page(
    admin: Admin, ops: Operations, browser: Browser
) -> None:
    before = await _only_coupled(admin)
    assert all(before.values())
    page = await _page(browser)
    await page.goto(f"{admin.url}/?token={ADMIN_TOKEN}")
    await page.locator("#full-sync").click()
    await page.locator("#confirm-start").click()
    panel = page.locator("#run-panel")
    dialog = page.locator("#keep-question")
    await expect(dialog).to_be_visible(timeout=120_000)
    run_id = await panel.get_attribute("data-run-id")
    assert run_id is not None and await dialog.get_attribute("data-run-id") == run_id
    await expect(dialog).to_contain_text(", ".join(DEFAULT_NAMES))
    # The run waits on the page: its jobs are over, its question open.
    asking = await ops.progress(run_id)
    assert asking is not None and asking.run.status == "running"
    assert asking.run.question == "keep_only_coupled_cleared"
    assert {j.status for j in asking.jobs} == {"finished"}
    await expect(page.locator("#run-answer")).to_contain_text("Waiting for an answer")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-keep-question.png"), full_page=True)

    await page.locator("#keep-cleared").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#run-answer")).to_have_attribute("data-answer", "keep")
    await expect(panel).to_have_attribute("data-status", "finished", timeout=60_000)
    await expect(page.locator("#run-meta")).to_contain_text(
        f"sync only coupled records is now cleared on {', '.join(DEFAULT_NAMES)} (answered)"
    )
    await expect(dialog).to_be_hidden()
    done = await ops.progress(run_id)
    assert done is not None and done.run.options["keep_answer"] is True
    after = await _only_coupled(admin)
    assert after == dict.fromkeys(before, False)
    assert page.problems == []  # type: ignore[attr-defined]


async def test_a_wrong_token_is_asked_for_again(admin: Admin, browser: Browser) -> None:
    page = await _page(browser)
    await page.goto(f"{admin.url}/?token=not-the-token")
    await expect(page.locator("#login")).to_be_visible(timeout=EXPECT_TIMEOUT_MS)
    await expect(page.locator("#login-error")).to_contain_text("refused")
    await page.locator("#token-input").fill(ADMIN_TOKEN)
    await page.locator("#login-form button[type=submit]").click()
    await expect(page.locator("#mappings-table tbody tr")).to_have_count(
        len(DEFAULT_NAMES), timeout=EXPECT_TIMEOUT_MS
    )
    # Nothing secret is in the page itself.
    html = await (await page.request.get(f"{admin.url}/")).text()
    assert ADMIN_TOKEN not in html

    async def no_login() -> bool:
        return await page.locator("#login").is_hidden()

    await wait_for(no_login, timeout_s=10, what="the login form to close")


async def test_the_errors_panel_retries_restores_and_deletes_a_record_once_confirmed(
    admin: Admin, ops: Operations, browser: Browser
) -> None:
    stack = admin.stack
    # A Dataverse vendor holds the account number a new BC customer will need.
    twin = await stack.dv_post(
        "accounts", {"name": "Vendor twin", "accountnumber": "C90009", "customertypecode": 11}
    )
    first = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert first.run.status == "finished", first.run.message
    await stack.set_mapping("CUSTOMER", sync_only_coupled=False)
    customer = await stack.bc_post("customers", {"displayName": "Twin Co", "number": "C90009"})

    async def skipped() -> bool:
        rows = (await admin.client.get("/api/errors", params={"skipped": "true"})).json()
        return any(r["bc_id"] == customer["id"] for r in rows)

    await wait_for(skipped, timeout_s=90, what="the repeated failure to become skipped")
    page = await _page(browser)
    await page.goto(f"{admin.url}/?token={ADMIN_TOKEN}")
    await page.locator('#mappings-table tr[data-mapping="CUSTOMER"] .mapping-name').click()
    await expect(page.locator("#problems-mapping")).to_have_value("CUSTOMER")
    row = page.locator(f'#problems-table tr[data-record-id="{customer["id"]}"]')
    await expect(row).to_have_attribute("data-status", "skipped")
    # Restore and delete record are for couplings whose record was deleted.
    await expect(row.locator('button[data-action="restore"]')).to_be_disabled()
    await expect(row.locator('button[data-action="delete-records"]')).to_be_disabled()
    # Its history: its failure, counted in the job that counted it.
    await row.locator('button[data-action="history"]').click()
    history = page.locator("#history-card")
    await expect(history).to_be_visible()
    await expect(history).to_contain_text(customer["id"])
    failed = history.locator('#history-table tr[data-decision="failed"]')
    await expect(failed.first).to_be_visible()
    logged = (
        await admin.client.get(
            "/api/records/CUSTOMER/log", params={"side": "bc", "id": customer["id"]}
        )
    ).json()
    failed_in = {e["job_id"] for e in logged if e["decision"] == ["failed"]}
    assert await failed.first.get_attribute("data-job-id") in failed_in

    await stack.dv_patch("accounts", twin["accountid"], {"accountnumber": "V-TWIN"})
    await row.locator('button[data-action="retry"]').click()
    result = page.locator("#problems-result")
    await expect(result).to_have_attribute("data-action", "retry")
    await expect(result).to_have_attribute("data-outcome", "done")
    await expect(result).to_contain_text("inserted 1")
    await expect(row).to_have_count(0)
    assert customer["id"] in await stack.couplings("CUSTOMER")

    # A coupled account deleted in Dataverse: found, then its BC customer deleted.
    bc_id, dv_id = sorted((await stack.couplings("CUSTOMER")).items())[0]
    assert (await stack.dv.delete(f"/api/data/v9.2/accounts({dv_id})")).status_code == 204
    await page.locator("#problems-find-deleted").click()
    await expect(result).to_have_attribute("data-action", "find_deleted")
    gone = page.locator(f'#problems-table tr[data-record-id="{dv_id}"]')
    await expect(gone).to_have_attribute("data-reason", "deleted")
    await gone.locator('button[data-action="delete-records"]').click()
    dialog = page.locator("#confirm-delete")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(bc_id)
    await page.locator("#confirm-delete-cancel").click()
    await expect(dialog).to_be_hidden()
    assert await stack.bc_rows("customers", f"?$filter=id eq {bc_id}"), "cancelled: kept"
    await gone.locator('button[data-action="delete-records"]').click()
    await page.locator("#confirm-delete-go").click()
    await expect(result).to_have_attribute("data-action", "delete_records")
    await expect(result).to_contain_text("deleted 1")
    await expect(gone).to_have_count(0)
    assert await stack.bc_rows("customers", f"?$filter=id eq {bc_id}") == []

    # Another coupled account deleted in Dataverse, restored from its row: a
    # new account from the BC customer, coupled in place of the one deleted.
    bc_2, dv_2 = sorted((await stack.couplings("CUSTOMER")).items())[0]
    assert (await stack.dv.delete(f"/api/data/v9.2/accounts({dv_2})")).status_code == 204
    await page.locator("#problems-find-deleted").click()
    deleted = page.locator(f'#problems-table tr[data-record-id="{dv_2}"]')
    await expect(deleted).to_have_attribute("data-reason", "deleted")
    await deleted.locator('button[data-action="restore"]').click()
    await expect(result).to_have_attribute("data-action", "restore")
    await expect(result).to_have_attribute("data-outcome", "done")
    await expect(result).to_contain_text("inserted 1")
    await expect(deleted).to_have_count(0)
    restored = (await stack.couplings("CUSTOMER"))[bc_2]
    assert restored != dv_2
    assert await stack.dv_rows("accounts", f"?$filter=accountid eq {restored}")

    # Each action counted in a job of its own, shown in the page's job log.
    for kind in ("retry", "restore"):
        jobs = (await admin.client.get("/api/jobs", params={"kind": kind})).json()
        assert [(j["mapping"], j["counts"]["inserted"]) for j in jobs] == [("CUSTOMER", 1)]
        logged = page.locator(f'#jobs-table tr[data-job-id="{jobs[0]["job_id"]}"]')
        await expect(logged).to_contain_text(kind)

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-errors.png"), full_page=True)
    assert page.problems == []  # type: ignore[attr-defined]


async def test_runs_are_cancelled_coupled_and_a_record_synced_from_the_page(
    admin: Admin, ops: Operations, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await ops.wait(await ops.full_sync(), timeout_s=120)
    assert first.run.status == "finished", first.run.message
    # The next run's first job is held until the page has cancelled the run,
    # so the click lands while a step runs, whatever the machine's speed.
    hold = hold_first_job(monkeypatch)
    page = await _page(browser)
    await page.goto(f"{admin.url}/?token={ADMIN_TOKEN}")
    panel = page.locator("#run-panel")

    # An unconditional full synchronization, cancelled from its panel.
    await page.locator("#full-sync").click()
    await page.locator("#confirm-unconditional").check()
    await page.locator("#confirm-start").click()
    await expect(page.locator("#run-title")).to_have_text("Unconditional full synchronization")
    await asyncio.wait_for(hold.entered.wait(), 120)
    await page.locator("#run-cancel").click()
    await expect(panel).to_have_attribute("data-status", "cancelled")
    await expect(page.locator("#run-cancel")).to_be_hidden()
    await expect(page.locator("#run-meta")).to_contain_text("cancelled by admin")
    hold.release.set()
    cancelled_id = await panel.get_attribute("data-run-id")
    assert cancelled_id is not None
    cancelled = await ops.progress(cancelled_id)
    assert cancelled.run.status == "cancelled"
    assert cancelled.run.options["unconditional"] is True

    # A coupling run, creating what has no match: everything is coupled already.
    await page.locator("#couple-by-match").click()
    await page.locator("#coupling-create-new").check()
    await page.locator("#coupling-start").click()
    await expect(page.locator("#run-title")).to_have_text("Coupling by match")
    await expect(panel).to_have_attribute("data-status", "finished", timeout=120_000)
    coupling_id = await panel.get_attribute("data-run-id")
    assert coupling_id is not None and coupling_id != cancelled_id
    coupling = await ops.progress(coupling_id)
    assert (coupling.run.kind, coupling.run.options["create_new"]) == ("coupling", True)
    assert {j.type for j in coupling.jobs} == {"coupling"}
    assert sum(j.counts["inserted"] for j in coupling.jobs) == 0

    # One coupled customer synchronized now, by its BC id.
    bc_id = sorted(await admin.stack.couplings("CUSTOMER"))[0]
    await page.locator('#mappings-table tr[data-mapping="CUSTOMER"] .mapping-name').click()
    await expect(page.locator("#problems-mapping")).to_have_value("CUSTOMER")
    await page.locator("#sync-now-side").select_option("bc")
    await page.locator("#sync-now-id").fill(bc_id)
    await page.locator("#sync-now-go").click()
    result = page.locator("#problems-result")
    await expect(result).to_have_attribute("data-action", "sync_now")
    await expect(result).to_have_attribute("data-outcome", "done")
    # CUSTOMER syncs both ways: the pair is compared in each, a job for each.
    await expect(result).to_contain_text("Synchronize now: 2 records")
    await expect(result).to_contain_text("2 jobs")
    jobs = (await admin.client.get("/api/jobs", params={"kind": "sync_now"})).json()
    assert sorted((j["mapping"], j["direction"]) for j in jobs) == [
        ("CUSTOMER", "from_integration"),
        ("CUSTOMER", "to_integration"),
    ]
    await expect(page.locator(f'#jobs-table tr[data-job-id="{jobs[0]["job_id"]}"]')).to_be_visible()
    # An unknown id is refused with its reason, and the page goes on.
    await page.locator("#sync-now-id").fill("8b1c8f5e-58a2-4c25-9d36-f3a3f2b0a111")
    await page.locator("#sync-now-go").click()
    await expect(result).to_have_attribute("data-outcome", "refused")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"), full_page=True)
