"""Faults the fault run found, each kept as the smallest scenario that shows
it, so it cannot come back unnoticed. They run after the fault run, on the
suite's pipeline (a failing one may leave a mapping stuck)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.faults.broker import apply_lag, published
from tests.faults.pipeline import Pipeline, wait_until
from tests.faults.procs import Exit, Proc
from tests.faults.scope import CONTACTS, CUSTOMER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

_PG_ERRORS = ("CannotConnectNowError", "AdminShutdownError", "CrashShutdownError")


async def _settled_mapping(p: Pipeline, mapping: str) -> bool:
    table = CUSTOMER if mapping == "CUSTOMER" else CONTACTS
    group = f"{p.topics.prefix}tablesync.apply.{mapping}"
    topics = [p.topics.cdc("bc", table.bc_set), p.topics.cdc("dataverse", table.dv_set)]
    lag = await apply_lag(p.infra.bootstrap, {group: topics})
    return lag[group] == 0


async def _published_at_least(p: Pipeline, topic: str, count: int) -> bool:
    return await published(p.infra.bootstrap, topic) >= count


async def _bc_customer(p: Pipeline, label: str) -> dict[str, Any]:
    number = f"OK{uuid.uuid4().hex[:8].upper()}"
    return await p.apis["bc"].create(
        "customers", {"number": number, "displayName": label}, ("number", number)
    )


async def _new_customer(p: Pipeline, label: str, timeout_s: float = 60) -> str:
    """A BC customer, once tablesync has coupled it (a second or two); its id."""
    row = await _bc_customer(p, label)
    await wait_until(
        lambda: p.is_coupled("CUSTOMER", "bc", row["id"]),
        timeout_s=timeout_s,
        what=f"{label} to be coupled",
    )
    return str(row["id"])


async def test_running_services_survive_a_postgres_restart(pipeline: Pipeline) -> None:
    """'The database system is shutting down' and 'terminating connection due
    to administrator command' are waited out like a refused connection, not
    fatal. The window is short, so the restart is repeated."""
    p = pipeline
    await p.ensure_running()
    seen = len(p.supervisor.exits)
    died: list[Exit] = []
    for attempt in range(3):
        await p.infra.stop_postgres()
        await p.infra.start_postgres()
        # Work that needs every service after the restart: capture, apply, state.
        await _new_customer(p, f"After restart {attempt}")
        died = [
            e
            for e in p.supervisor.exits[seen:]
            if e.running and any(error in e.cause for error in _PG_ERRORS)
        ]
        if died:
            break
    assert not died, [(e.name, e.cause) for e in died]


async def _deleted_by_direction(p: Pipeline, mapping: str) -> dict[str, int]:
    rows = await p.query(
        "SELECT j.direction, coalesce(sum(p.deleted), 0) AS deleted FROM jobs j "
        "JOIN job_partitions p USING (job_id) WHERE j.mapping = $1 GROUP BY j.direction",
        mapping,
    )
    found = {"to_integration": 0, "from_integration": 0}
    found.update({r["direction"]: int(r["deleted"]) for r in rows})
    return found


async def test_a_deletion_is_counted_in_the_direction_it_was_written(pipeline: Pipeline) -> None:
    """A change whose counterpart was deleted deletes its own record
    (``deletion: delete``); that deletion counts in the job of the side it
    deleted on, not in the job of the change's direction."""
    p = pipeline
    await p.ensure_running()
    bc_id = await _new_customer(p, "Deleted in Dataverse, changed in BC")
    number = (await p.apis["bc"].rows("customers", f"id eq {bc_id}"))[0]["number"]
    dv_id = (await p.apis["dataverse"].find("accounts", "accountnumber", number))[0]["accountid"]
    before = await _deleted_by_direction(p, "CUSTOMER")
    capture = await p.solo_capture("dataverse")
    # Without Dataverse's capture the deletion reaches apply only through the
    # BC change that finds its counterpart gone: the path under test.
    await capture.stop()
    try:
        assert await p.apis["dataverse"].delete("accounts", dv_id) == "deleted"
        await p.apis["bc"].update("customers", bc_id, {"city": "Changed after the delete"})

        async def gone() -> bool:
            # The record and, committed with the counters, its coupling.
            rows = await p.apis["bc"].rows("customers", f"id eq {bc_id}")
            return not rows and not await p.is_coupled("CUSTOMER", "bc", bc_id)

        await wait_until(gone, timeout_s=60, what="the BC customer to be deleted")
    finally:
        await capture.start()
    after = await _deleted_by_direction(p, "CUSTOMER")
    # A BC record was deleted: that is Dataverse -> BC, from_integration.
    assert after["from_integration"] - before["from_integration"] == 1, (before, after)
    assert after["to_integration"] == before["to_integration"], (before, after)


async def test_a_dataverse_contact_created_and_changed_in_one_batch_is_created_once(
    pipeline: Pipeline,
) -> None:
    """BC chooses the ids of the records tablesync creates there, so a second
    chunk of one batch must see the coupling the first chunk made (not
    committed yet), or it creates the record again and the commit fails on
    the couplings' unique key, batch after batch."""
    p = pipeline
    await p.ensure_running()
    parent_bc = await _new_customer(p, "Parent of one-batch contact")
    accounts = await p.apis["bc"].rows("customers", f"id eq {parent_bc}")
    number = accounts[0]["number"]
    parent_dv = (await p.apis["dataverse"].find("accounts", "accountnumber", number))[0]
    email = f"onebatch-{uuid.uuid4().hex[:8]}@faults.example"
    apply = await p.solo_apply("CONTACTS")
    seen = len(p.supervisor.exits)
    topic = p.topics.cdc("dataverse", "contacts")
    # Apply is away (a deploy, a crash): both changes wait in Kafka for it.
    await apply.stop()
    events = await published(p.infra.bootstrap, topic)
    created = await p.apis["dataverse"].create(
        "contacts",
        {
            "lastname": "First Name",
            "emailaddress1": email,
            "parentcustomerid_account@odata.bind": f"/accounts({parent_dv['accountid']})",
        },
        ("emailaddress1", email),
    )

    # Capture reads rows as they are: the change must come after the create
    # was published, or the two are one event.
    await wait_until(
        lambda: _published_at_least(p, topic, events + 1), timeout_s=60, what="the create's event"
    )
    await p.apis["dataverse"].update("contacts", created["contactid"], {"lastname": "Second Name"})
    await wait_until(
        lambda: _published_at_least(p, topic, events + 2), timeout_s=60, what="the change's event"
    )
    await apply.start()
    try:
        await wait_until(
            lambda: _settled_mapping(p, "CONTACTS"), timeout_s=60, what="CONTACTS to catch up"
        )
    finally:
        in_bc = await p.apis["bc"].find("contacts", "email", email)
        crashes = [e for e in p.supervisor.exits[seen:] if e.name == apply.name and e.running]
    assert [r["displayName"] for r in in_bc] == ["Second Name"]
    assert not crashes, [e.cause for e in crashes]


@dataclass(frozen=True)
class _Interrupted:
    number: str
    account_id: str
    topic: str
    events: int


async def _account_update_written_then_crashed(p: Pipeline, label: str) -> _Interrupted:
    """A coupled Dataverse account whose change ("<label> v1") apply wrote to
    BC before dying ahead of its commit; apply stays down."""
    number = f"O{label[0]}{uuid.uuid4().hex[:8].upper()}"
    account = await p.apis["dataverse"].create(
        "accounts",
        {"accountnumber": number, "name": f"{label} v0", "customertypecode": 3},
        ("accountnumber", number),
    )
    account_id = str(account["accountid"])
    await wait_until(
        lambda: p.is_coupled("CUSTOMER", "dataverse", account_id),
        timeout_s=60,
        what="the account to be coupled",
    )
    topic = p.topics.cdc("dataverse", "accounts")
    apply = await p.solo_apply("CUSTOMER")
    await apply.stop()
    events = await published(p.infra.bootstrap, topic)
    await p.apis["dataverse"].update("accounts", account_id, {"name": f"{label} v1"})
    await wait_until(
        lambda: _published_at_least(p, topic, events + 1), timeout_s=60, what="v1's event"
    )
    await apply.arm("apply.before_commit:CUSTOMER", 1, restart=False)
    try:
        await asyncio.wait_for(apply.fired.wait(), timeout=60)
    finally:
        apply.restart_after_fault = True
    return _Interrupted(number, account_id, topic, events + 1)


async def test_a_write_lost_to_a_crash_is_still_recognised_as_an_echo(pipeline: Pipeline) -> None:
    p = pipeline
    await p.ensure_running()
    apply = await p.solo_apply("CUSTOMER")
    # Apply writes v1 to BC and dies before it records that write in the coupling.
    lost = await _account_update_written_then_crashed(p, "Echo")
    number, account_id, topic = lost.number, lost.account_id, lost.topic
    # The user changes the account again while apply is down.
    await p.apis["dataverse"].update("accounts", account_id, {"name": "Echo v2"})
    await wait_until(
        lambda: _published_at_least(p, topic, lost.events + 1), timeout_s=60, what="v2's event"
    )
    await apply.start()

    async def both_sides() -> tuple[str, str] | None:
        bc = await p.apis["bc"].find("customers", "number", number)
        dv = await p.apis["dataverse"].find("accounts", "accountnumber", number)
        names = (bc[0]["displayName"], dv[0]["name"])
        settled = await _settled_mapping(p, "CUSTOMER") and names[0] == names[1]
        return names if settled else None

    names = await wait_until(both_sides, timeout_s=60, what="both sides to agree")
    assert names == ("Echo v2", "Echo v2")


async def test_an_update_interrupted_before_its_record_was_deleted_leaves_no_intent(
    pipeline: Pipeline,
) -> None:
    """Apply updates a BC customer and dies before it commits; the user then
    deletes that customer. The announced update has nothing left to decide and
    must not stay open (it would for good: no event names it again)."""
    p = pipeline
    await p.ensure_running()
    lost = await _account_update_written_then_crashed(p, "Update")
    coupled = await p.query(
        "SELECT bc_id::text AS id FROM couplings WHERE mapping = 'CUSTOMER' AND dv_id = $1::uuid",
        lost.account_id,
    )
    customer_id = coupled[0]["id"]
    apply = await p.solo_apply("CUSTOMER")

    async def intents() -> list[str]:
        rows = await p.query(
            "SELECT kind FROM write_intents WHERE mapping = 'CUSTOMER' AND record_id = $1",
            customer_id,
        )
        return [r["kind"] for r in rows]

    assert await intents() == ["update"], "apply died elsewhere than between write and commit"
    await p.apis["bc"].delete("customers", customer_id)
    await apply.start()
    await wait_until(
        lambda: _settled_mapping(p, "CUSTOMER"), timeout_s=60, what="the lag to be 0 again"
    )

    async def no_intent_left() -> bool:
        return not await intents()

    await wait_until(no_intent_left, timeout_s=60, what="the announced update to be closed")


async def _refused_by_bc(p: Pipeline) -> str:
    """A Dataverse account whose number a blocked BC customer (outside the
    mapping, so no match) already has: BC refuses to create it. The mirror
    of the fault run's poison. Its id, once the refusal is reported."""
    number = f"OR{uuid.uuid4().hex[:8].upper()}"
    await p.apis["bc"].create(
        "customers",
        {"number": number, "displayName": "Blocked", "blocked": "All"},
        ("number", number),
    )
    account = await p.apis["dataverse"].create(
        "accounts",
        {"accountnumber": number, "name": "Refused by BC", "customertypecode": 3},
        ("accountnumber", number),
    )
    account_id = str(account["accountid"])
    await wait_until(
        lambda: _status(p, "CUSTOMER", account_id),
        timeout_s=60,
        what="the refused create to be reported",
    )
    return account_id


async def _status(p: Pipeline, mapping: str, source_id: str) -> str:
    rows = await p.query(
        "SELECT status, message FROM record_status WHERE mapping = $1 AND source_id = $2",
        mapping,
        source_id,
    )
    return f"{rows[0]['status']}: {rows[0]['message']}" if rows else ""


async def _forget(p: Pipeline, mapping: str, source_id: str) -> None:
    """Test clean-up: a create left failing, with its open intent, would hold
    the records of the tests after this one."""
    await p.query(
        "DELETE FROM record_status WHERE mapping = $1 AND source_id = $2 RETURNING 1",
        mapping,
        source_id,
    )
    await p.query(
        "DELETE FROM create_intents WHERE mapping = $1 AND source_id = $2 RETURNING 1",
        mapping,
        source_id,
    )


async def test_a_create_bc_refuses_is_skipped_after_repeated_failures(pipeline: Pipeline) -> None:
    p = pipeline
    await p.ensure_running()
    account_id = await _refused_by_bc(p)
    try:

        async def skipped() -> bool:
            return (await _status(p, "CUSTOMER", account_id)).startswith("skipped")

        # skip_after_failures is 5, retries at most 2 s apart in the suite.
        await wait_until(skipped, timeout_s=60, what="the refused create to be skipped")
        assert "already exists" in await _status(p, "CUSTOMER", account_id)
    finally:
        await _forget(p, "CUSTOMER", account_id)


async def test_a_create_bc_refuses_holds_no_other_record(pipeline: Pipeline) -> None:
    p = pipeline
    await p.ensure_running()
    account_id = await _refused_by_bc(p)
    try:
        await _new_customer(p, "Made in BC after a refused create")
    finally:
        await _forget(p, "CUSTOMER", account_id)


async def test_an_intent_settled_by_a_match_holds_no_other_record(pipeline: Pipeline) -> None:
    p = pipeline
    await p.ensure_running()
    apply = await p.solo_apply("CUSTOMER")
    topic = p.topics.cdc("dataverse", "accounts")
    await apply.stop()
    events = await published(p.infra.bootstrap, topic)
    number = f"OM{uuid.uuid4().hex[:8].upper()}"
    account = await p.apis["dataverse"].create(
        "accounts",
        {"accountnumber": number, "name": "Made in Dataverse", "customertypecode": 3},
        ("accountnumber", number),
    )
    await wait_until(
        lambda: _published_at_least(p, topic, events + 1), timeout_s=60, what="its event"
    )
    # Apply creates the BC customer and dies before it records the coupling.
    await apply.arm("apply.before_commit:CUSTOMER", 1, restart=False)
    try:
        await asyncio.wait_for(apply.fired.wait(), timeout=60)
    finally:
        apply.restart_after_fault = True
    made = await p.apis["bc"].find("customers", "number", number)
    assert len(made) == 1, made
    # Someone edits it before apply is back: it no longer looks like the create.
    await p.apis["bc"].update("customers", made[0]["id"], {"displayName": "Edited meanwhile"})
    await apply.start()
    await wait_until(
        lambda: p.is_coupled("CUSTOMER", "dataverse", account["accountid"]),
        timeout_s=90,
        what="the account to be coupled again",
    )
    try:
        # Any other BC customer must still reach Dataverse.
        await _new_customer(p, "Made in BC after the recovery")
    finally:
        await _forget(p, "CUSTOMER", str(account["accountid"]))


async def test_a_crash_between_commit_and_offset_commit_leaves_no_lag(pipeline: Pipeline) -> None:
    """The state database has the batch; Kafka's offsets do not. Apply skips
    those events on restart, and must say so to Kafka too: otherwise the
    group's lag, which operators watch, shows them unapplied until the
    partition's next event (for ever on a quiet table)."""
    p = pipeline
    await p.ensure_running()
    await wait_until(lambda: _settled_mapping(p, "CUSTOMER"), timeout_s=60, what="no lag")
    apply = await p.solo_apply("CUSTOMER")
    await apply.arm("apply.after_commit:CUSTOMER", 1, restart=False)
    try:
        number = f"OL{uuid.uuid4().hex[:8].upper()}"
        row = await p.apis["bc"].create(
            "customers", {"number": number, "displayName": "Quiet afterwards"}, ("number", number)
        )
        await asyncio.wait_for(apply.fired.wait(), timeout=60)
    finally:
        apply.restart_after_fault = True
    assert await p.is_coupled("CUSTOMER", "bc", row["id"]), "the crash came before the commit"
    await apply.start()
    await wait_until(
        lambda: _settled_mapping(p, "CUSTOMER"), timeout_s=60, what="the lag to be 0 again"
    )


def _logged_since(proc: Proc, event: bytes) -> Callable[[], Awaitable[bool]]:
    """A probe: whether ``proc`` has logged ``event`` since the probe was made."""
    path = proc.log_path
    start = path.stat().st_size

    async def probe() -> bool:
        with path.open("rb") as f:
            f.seek(start)
            return event in f.read()

    return probe


async def _in_hand(
    p: Pipeline, row: dict[str, Any], waiting: Callable[[], Awaitable[bool]]
) -> bool:
    """Whether capture has read ``row``: it waits for the broker's ack since,
    or its watermark has passed the row."""
    if await waiting():
        return True
    rows = await p.query(
        "SELECT watermark FROM capture_checkpoints WHERE side = 'bc' AND table_name = $1",
        CUSTOMER.bc_set,
    )
    return bool(rows) and rows[0]["watermark"] >= _modified(row)


def _modified(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["lastModifiedDateTime"])


async def _now_past(moment: datetime) -> bool:
    return datetime.now(UTC) > moment


async def test_running_services_wait_out_a_broker_restart(pipeline: Pipeline) -> None:
    """A change captured while the broker is away is published and applied
    once it is back; no service gives up meanwhile."""
    p = pipeline
    await p.ensure_running()
    seen = len(p.supervisor.exits)
    waiting = _logged_since(await p.solo_capture("bc"), b"kafka_publish_waiting")
    await p.infra.stop_broker()
    try:
        row = await _bc_customer(p, "Made while Kafka was away")
        await wait_until(waiting, timeout_s=90, what="capture to wait for the broker's ack")
    finally:
        await p.infra.start_broker()
    await wait_until(
        lambda: p.is_coupled("CUSTOMER", "bc", row["id"]),
        timeout_s=120,
        what="the customer made while Kafka was away to be coupled",
    )
    died = p.supervisor.exits[seen:]
    assert not died, [(e.name, e.cause) for e in died]


async def test_changes_never_acknowledged_are_captured_again_after_a_crash(
    pipeline: Pipeline,
) -> None:
    """Capture moves its watermark only past what the broker acknowledged. Two
    changes further apart than the capture's overlap, read while the broker
    is away by a capture then killed, both reach Dataverse."""
    p = pipeline
    await p.ensure_running()
    capture = await p.solo_capture("bc")
    apart = timedelta(seconds=3 * p.tuning.poll_overlap_s)
    rows: list[dict[str, Any]] = []
    await p.infra.stop_broker()
    try:
        for label in ("First while Kafka was away", "Second while Kafka was away"):
            if rows:
                # Further apart than the overlap the capture reads again.
                after = _modified(rows[-1]) + apart
                await wait_until(
                    lambda after=after: _now_past(after), timeout_s=60, what="the clock"
                )
            waiting = _logged_since(capture, b"kafka_publish_waiting")
            rows.append(await _bc_customer(p, label))
            await wait_until(
                lambda row=rows[-1], waiting=waiting: _in_hand(p, row, waiting),
                timeout_s=90,
                what=f"capture to have read {label!r}",
            )
        capture.kill9()
        assert await capture.wait_exit(30) is not None, "capture outlived kill -9"
    finally:
        await p.infra.start_broker()
    await capture.start()
    for record_id in (str(row["id"]) for row in rows):
        await wait_until(
            lambda record_id=record_id: p.is_coupled("CUSTOMER", "bc", record_id),
            timeout_s=120,
            what=f"customer {record_id}, never acknowledged before the crash, to be coupled",
        )
