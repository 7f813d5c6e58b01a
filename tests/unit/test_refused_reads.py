"""A read a side refuses never stalls a mapping or crashes a service: a
query refused for some records is narrowed down to them, and they become
record errors while the rest of the batch is applied; credentials refused
are waited out with the position kept; capture waits on the table whose
read is refused while its other tables go on. On in-memory ports, capture
and apply running on virtual time."""

from __future__ import annotations

import asyncio
import copy

import pytest
from structlog.testing import capture_logs

from tablesync import metrics
from tablesync.core.effects import BatchEffects
from tablesync.core.events import RecordChanged
from tablesync.core.filters import to_odata
from tablesync.core.stored import Selection
from tablesync.errors import ReadRefused
from tests.capturing import on_virtual_time
from tests.faults.scope import MAPPINGS_DOCUMENT
from tests.mempipeline import CUSTOMER, Pipeline, pipeline, until

_REASON = "The value of accountnumber cannot be read in a query."


def _refused_total(side: str, entity_set: str, status: int) -> float:
    value = metrics._reads_refused.labels(side, entity_set, str(status))._value.get()
    return float(value)


def test_a_match_query_refused_for_one_record_fails_that_record_and_applies_the_rest() -> None:
    async def body() -> None:
        p = await pipeline()
        bc, dataverse = p.sides["bc"], p.sides["dataverse"]
        stop = asyncio.Event()
        services = [p.capture("bc"), p.apply()]
        running = [asyncio.ensure_future(s.run(stop)) for s in services]
        await until(lambda: ("bc", "customers") in p.database.t.checkpoints, within_s=30)
        rows = [bc.user_create("customers", {"displayName": f"Customer {n}"}) for n in range(6)]
        poison = str(rows[2].fields["number"])
        dataverse.faults.refuse_read(
            method="find",
            table="accounts",
            where=lambda e: f"'{poison}'" in to_odata(e),
            status=400,
            message=_REASON,
        )
        before = _refused_total("dataverse", "accounts", 400)
        with capture_logs() as logs:
            await until(lambda: len(p.accounts()) == 5 and p.lag() == 0, within_s=60)
        problems = await p.stores.problems.records(Selection(mapping=CUSTOMER))

        numbers = {str(r.fields["number"]) for r in rows}
        assert set(p.accounts()) == numbers - {poison}
        [problem] = problems
        assert (problem.source_side, problem.source_id) == ("bc", rows[2].id)
        assert problem.status == "failed"
        assert "dataverse refused to read accounts" in problem.message
        assert f"400 {_REASON}" in problem.message
        [error] = await p.stores.jobs.errors(mapping=CUSTOMER)
        assert error.source_id == rows[2].id
        assert f"400 {_REASON}" in error.message
        refused = [e for e in logs if e["event"] == "read_refused"]
        assert refused and all(
            e["side"] == "dataverse"
            and e["entity_set"] == "accounts"
            and e["status"] == 400
            and _REASON in e["reason"]
            and e["records"] == 1
            for e in refused
        )
        assert _refused_total("dataverse", "accounts", 400) > before

        # Once the side serves the read, the listed record is tried again and synced.
        dataverse.faults.clear()
        await until(lambda: poison in p.accounts(), within_s=60)
        stop.set()
        await asyncio.gather(*running)

    on_virtual_time(body)


def test_credentials_refused_are_waited_out_with_the_position_kept() -> None:
    async def body() -> None:
        p = await pipeline()
        bc, dataverse = p.sides["bc"], p.sides["dataverse"]
        stop = asyncio.Event()
        services = [p.capture("bc"), p.apply()]
        running = [asyncio.ensure_future(s.run(stop)) for s in services]
        await until(lambda: ("bc", "customers") in p.database.t.checkpoints, within_s=30)
        message = "Principal user is missing prvReadAccount privilege"
        dataverse.faults.refuse_read(table="accounts", status=403, message=message)
        with capture_logs() as logs:
            row = bc.user_create("customers", {"displayName": "Waits"})
            await until(lambda: sum(e["event"] == "read_refused" for e in logs) >= 3, within_s=120)
            # Nothing is lost or given up: the batch stays unapplied and uncommitted.
            assert p.lag() == 1
            assert p.accounts() == {}
            assert await p.stores.problems.records(Selection(mapping=CUSTOMER)) == []
            assert not any(t.done() for t in running)
        refused = [e for e in logs if e["event"] == "read_refused"]
        assert all(
            e["side"] == "dataverse"
            and e["entity_set"] == "accounts"
            and e["status"] == 403
            and e["credentials"] is True
            and message in e["reason"]
            for e in refused
        )
        assert not any(e["event"] == "read_narrowed" for e in logs)

        dataverse.faults.clear()
        await until(lambda: str(row.fields["number"]) in p.accounts(), within_s=60)
        await until(lambda: p.lag() == 0, within_s=30)
        stop.set()
        await asyncio.gather(*running)

    on_virtual_time(body)


def test_long_match_values_are_asked_for_in_queries_the_side_serves() -> None:
    """A fixed number of records a match query outgrew the filter limit with
    long values: the side refused every such query."""

    async def body() -> None:
        document = {"mappings": {CUSTOMER: copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][CUSTOMER])}}
        document["mappings"][CUSTOMER]["match"] = [{"bc": "displayName", "dataverse": "name"}]
        p = await pipeline(document)
        bc = p.sides["bc"]
        rows = [
            bc.user_create("customers", {"displayName": f"{n:03d} " + "O'Brien & Sons " * 6})
            for n in range(45)
        ]
        items = [p.item(r, n) for n, r in enumerate(rows)]
        effects = BatchEffects(CUSTOMER)
        with capture_logs() as logs:
            await p.applier().apply(items, effects)

        assert not [e for e in logs if e["event"] in ("read_refused", "read_narrowed")]
        assert effects.errors == []
        await p.stores.apply_state.commit(effects)
        assert len(p.sides["dataverse"].rows("accounts")) == 45

    on_virtual_time(body)


def test_a_refused_read_of_a_coupled_record_fails_it_and_the_batch_goes_on() -> None:
    async def body() -> None:
        p = await pipeline()
        bc, dataverse = p.sides["bc"], p.sides["dataverse"]
        rows = [bc.user_create("customers", {"displayName": f"Customer {n}"}) for n in range(4)]
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([p.item(r, n) for n, r in enumerate(rows)], effects)
        await p.stores.apply_state.commit(effects)
        made = p.accounts()
        assert len(made) == 4
        changed = [
            bc.user_update("customers", r.id, {"displayName": f"Renamed {n}"})
            for n, r in enumerate(rows)
        ]
        refused_id = made[str(rows[1].fields["number"])].id
        dataverse.faults.refuse_read(
            method="get_many",
            table="accounts",
            where=lambda e: refused_id in to_odata(e),
            status=400,
            message=_REASON,
        )
        effects = BatchEffects(CUSTOMER)
        await p.applier().apply([p.item(r, 10 + n) for n, r in enumerate(changed)], effects)
        await p.stores.apply_state.commit(effects)

        names = {n: r.fields["name"] for n, r in p.accounts().items()}
        expected = {str(r.fields["number"]): f"Renamed {n}" for n, r in enumerate(rows)}
        expected[str(rows[1].fields["number"])] = "Customer 1"
        assert names == expected
        [error] = effects.errors
        assert error.source_id == rows[1].id
        assert f"400 {_REASON}" in error.message

    on_virtual_time(body)


def test_capture_waits_on_the_table_whose_read_is_refused_and_goes_on_with_the_others() -> None:
    async def body() -> None:
        document = {
            "mappings": {
                name: copy.deepcopy(MAPPINGS_DOCUMENT["mappings"][name])
                for name in ("CUSTOMER", "CONTACTS")
            }
        }
        p = await pipeline(document)
        bc = p.sides["bc"]
        stop = asyncio.Event()
        running = asyncio.ensure_future(p.capture("bc").run(stop))
        checkpoints = p.database.t.checkpoints
        await until(
            lambda: ("bc", "customers") in checkpoints and ("bc", "contacts") in checkpoints,
            within_s=30,
        )
        bc.faults.refuse_read(
            method="changed_since", table="contacts", status=403, message="No permission"
        )
        with capture_logs() as logs:
            customer = bc.user_create("customers", {"displayName": "Goes on"})
            contact = bc.user_create(
                "contacts",
                {
                    "displayName": "Waits",
                    "type": "Person",
                    "companyNumber": customer.fields["number"],
                },
            )
            await until(lambda: bool(_events(p, "customers", customer.id)), within_s=30)
            await until(lambda: sum(e["event"] == "read_refused" for e in logs) >= 2, within_s=30)
            assert _events(p, "contacts", contact.id) == []
        refused = [e for e in logs if e["event"] == "read_refused"]
        assert all(
            e["side"] == "bc"
            and e["entity_set"] == "contacts"
            and e["status"] == 403
            and "No permission" in e["reason"]
            for e in refused
        )
        bc.faults.clear()
        await until(lambda: bool(_events(p, "contacts", contact.id)), within_s=30)
        stop.set()
        await running

    on_virtual_time(body)


def _events(p: Pipeline, table: str, record_id: str) -> list[RecordChanged]:
    found = []
    for record in p.broker.records(p.topics.cdc("bc", table)):
        event = p.codec.decode(record.value or b"")
        if isinstance(event, RecordChanged) and event.record_id == record_id:
            found.append(event)
    return found


def test_a_read_refused_for_the_credentials_is_not_narrowed() -> None:
    async def body() -> None:
        p = await pipeline()
        bc, dataverse = p.sides["bc"], p.sides["dataverse"]
        rows = [bc.user_create("customers", {"displayName": f"Customer {n}"}) for n in range(4)]
        dataverse.faults.refuse_read(table="accounts", status=401, message="token expired")
        calls = dataverse.stats.requests
        with pytest.raises(ReadRefused) as raised:
            await p.applier().apply(
                [p.item(r, n) for n, r in enumerate(rows)], BatchEffects(CUSTOMER)
            )
        assert raised.value.credentials and raised.value.status == 401
        # One request found it out; the records were not asked for one by one.
        assert dataverse.stats.requests == calls + 1

    on_virtual_time(body)
