"""``tablesync errors`` and the actions on it: ``retry``, ``restore``,
``delete-records``, ``delete-couplings``, ``find-deleted``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import typer

from tablesync.application import Operator
from tablesync.cli.common import fail, load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core.stored import JobError, ProblemRecord, Selection
from tablesync.runtime.actions import ActionResult
from tablesync.runtime.replay import ReplayResult

__all__ = [
    "delete_couplings",
    "delete_records",
    "errors",
    "find_deleted",
    "replay",
    "restore",
    "retry",
]

_IDS = typer.Argument(None, help="Record ids (BC or Dataverse) to act on.")
_MAPPING = typer.Option(None, "--mapping", help="Only this mapping.")
_SINCE = typer.Option(None, "--since", help="Only records that failed (or coupled) since then.")
_ALL = typer.Option(False, "--all", help="Every record the list shows.")
_JSON = typer.Option(False, "--json", help="Print JSON.")


def errors(
    mapping: str | None = _MAPPING,
    skipped: bool = typer.Option(False, "--skipped", help="Only records no longer retried."),
    job: str | None = typer.Option(None, "--job", help="The error rows of one job instead."),
    limit: int = typer.Option(200, help="At most this many, newest first."),
    json: bool = _JSON,
) -> None:
    """Records that did not sync — pending, failed (retried) or skipped — with the
    record on each side, the last error and how often it happened."""
    if job is not None:
        _job_errors(job, mapping, limit, json)
        return

    async def go() -> list[ProblemRecord]:
        async with open_operator(load_settings()) as operator:
            return await operator.problems(
                Selection(mapping=mapping, skipped_only=skipped), limit=limit
            )

    rows = [p.as_dict() for p in run_async(go())]
    render(
        rows,
        ["mapping", "status", "bc_id", "dataverse_id", "attempts", "last_failed_at", "message"],
        as_json=json,
        title="Coupled data synchronization errors",
    )


def _job_errors(job: str, mapping: str | None, limit: int, json: bool) -> None:
    async def go() -> list[JobError]:
        async with open_operator(load_settings()) as operator:
            return await operator.job_errors(job_id=job, mapping=mapping, limit=limit)

    rows = [
        {
            "occurred_at": e.occurred_at,
            "mapping": e.mapping,
            "direction": e.direction,
            "source_id": e.source_id,
            "destination_id": e.destination_id,
            "message": e.message,
        }
        for e in run_async(go())
    ]
    render(
        rows,
        ["occurred_at", "mapping", "direction", "source_id", "destination_id", "message"],
        as_json=json,
        title=f"Errors of job {job}",
    )


def perform_action(run: Callable[[Operator], Awaitable[ActionResult]], json: bool) -> None:
    """Runs an operator's action on records and prints its counts and jobs."""

    async def go() -> ActionResult:
        async with open_operator(load_settings()) as operator:
            return await run(operator)

    result = run_async(go())
    if json:
        print_json(result.as_dict())
        return
    counts = " ".join(f"{k}={v}" for k, v in sorted(result.counts.items())) or "nothing to do"
    typer.echo(
        f"{result.action}: {result.records} records; {counts}; jobs {', '.join(result.jobs)}"
    )


def _selection(
    ids: list[str] | None, mapping: str | None, since: datetime | None, everything: bool
) -> Selection:
    return Selection(
        mapping=mapping, record_ids=tuple(ids or ()), since=since, everything=everything
    )


def sync_record(
    mapping: str = typer.Argument(..., help="The mapping, e.g. CUSTOMER."),
    bc_id: str | None = typer.Option(None, "--bc-id", help="The BC record's id."),
    dataverse_id: str | None = typer.Option(None, "--dataverse-id", help="The Dataverse row's id."),
    json: bool = _JSON,
) -> None:
    """Synchronize one record now, healthy or not: a coupled pair is compared field
    by field in each direction the mapping syncs; an uncoupled record is matched,
    coupled or created on the other side."""
    if (bc_id is None) == (dataverse_id is None):
        fail("give exactly one of --bc-id and --dataverse-id")
    side = "bc" if bc_id else "dataverse"
    record = bc_id or dataverse_id or ""
    perform_action(lambda a: a.sync_now(mapping, side, record), json)


def retry(
    ids: list[str] | None = _IDS,
    mapping: str | None = _MAPPING,
    since: datetime | None = _SINCE,
    everything: bool = _ALL,
    json: bool = _JSON,
) -> None:
    """Clear the skip of failed records and sync them now, in their direction."""
    selection = _selection(ids, mapping, since, everything)
    perform_action(lambda a: a.retry(selection), json)


def restore(
    ids: list[str] | None = _IDS,
    mapping: str | None = _MAPPING,
    since: datetime | None = _SINCE,
    everything: bool = _ALL,
    json: bool = _JSON,
) -> None:
    """Re-create the deleted record of a coupling from the surviving side, and re-couple."""
    selection = _selection(ids, mapping, since, everything)
    perform_action(lambda a: a.restore(selection), json)


def delete_records(
    ids: list[str] | None = _IDS,
    mapping: str | None = _MAPPING,
    since: datetime | None = _SINCE,
    everything: bool = _ALL,
    yes: bool = typer.Option(False, "--yes", help="Confirm: the surviving records are deleted."),
    json: bool = _JSON,
) -> None:
    """Delete the surviving record of a coupling whose other record was deleted."""
    selection = _selection(ids, mapping, since, everything)
    perform_action(lambda a: a.delete_records(selection, confirmed=yes), json)


def delete_couplings(
    ids: list[str] | None = _IDS,
    mapping: str | None = _MAPPING,
    since: datetime | None = typer.Option(None, "--since", help="Couplings made since then."),
    everything: bool = _ALL,
    json: bool = _JSON,
) -> None:
    """Remove couplings; neither record changes, and a later sync may create counterparts."""
    selection = _selection(ids, mapping, since, everything)
    perform_action(lambda a: a.delete_couplings(selection), json)


def find_deleted(mapping: str | None = _MAPPING, json: bool = _JSON) -> None:
    """Flag couplings whose record no longer exists on either side."""
    perform_action(lambda a: a.find_deleted(mapping), json)


def replay(
    mapping: str = typer.Option(..., "--mapping", help="The mapping to replay."),
    since: datetime = typer.Option(..., "--since", help="Start of the window (captured at)."),
    until: datetime | None = typer.Option(
        None, "--until", help="End of the window; now if left out."
    ),
    json: bool = _JSON,
) -> None:
    """Apply again the changes captured in a time window, under the mapping as it is now."""

    async def go() -> ReplayResult:
        async with open_operator(load_settings()) as operator:
            return await operator.replay(mapping, since=since, until=until)

    result = run_async(go())
    if json:
        print_json(result.as_dict())
        return
    counts = " ".join(f"{k}={v}" for k, v in sorted(result.counts.items()) if v) or "nothing"
    typer.echo(f"replayed {result.events} events of {mapping}: {counts}")
