"""``tablesync full-sync`` and ``tablesync sync-modified``."""

from __future__ import annotations

import typer

from tablesync.application.dryrun import DirectionPreview
from tablesync.cli.answer import asks_on_terminal, prompting
from tablesync.cli.common import (
    EXIT_FAILED_RECORDS,
    EXIT_OK,
    fail,
    load_settings,
    print_json,
    run_async,
)
from tablesync.cli.context import open_operator
from tablesync.cli.output import JOB_COUNTS, render
from tablesync.cli.progress import progress_display
from tablesync.cli.recovery import perform_action
from tablesync.runtime.operations import RunProgress
from tablesync.settings import Settings

__all__ = ["couple_by_match", "full_sync", "sync_modified"]

_JOB_COLUMNS = ["mapping", "direction", "status", *JOB_COUNTS]


async def _request_and_wait(
    settings: Settings,
    request: str,
    *,
    mapping: list[str],
    keep: bool,
    wait: bool,
    timeout_s: float | None,
    quiet: bool,
    ask: bool = False,
    unconditional: bool = False,
    create_new: bool = False,
    sync_after: bool = False,
) -> tuple[str, RunProgress | None]:
    async with open_operator(settings) as operator:
        if request == "full":
            run_id = await operator.full_sync(
                mappings=mapping,
                keep_only_coupled_cleared=keep,
                unconditional=unconditional,
                ask=ask,
            )
        elif request == "coupling":
            run_id = await operator.couple_by_match(
                mappings=mapping, create_new=create_new, sync_after=sync_after
            )
            mapping = (await operator.progress(run_id)).run.mappings
        else:
            run_id = await operator.sync_modified(mapping=mapping[0] if mapping else None)
        if not wait:
            if ask:
                typer.echo(
                    "At its end the run asks whether to keep 'sync only coupled records' "
                    f"cleared: tablesync answer {run_id} --keep|--restore",
                    err=True,
                )
            return run_id, None
        names = mapping or list((await operator.mappings()).names())
        try:
            with progress_display(names, quiet=quiet) as show:
                hook = prompting(operator, run_id, show) if ask else show
                return run_id, await operator.wait(run_id, on_progress=hook, timeout_s=timeout_s)
        except TimeoutError as exc:
            fail(str(exc))


def _finish(run_id: str, progress: RunProgress | None, as_json: bool) -> None:
    if progress is None:
        if as_json:
            print_json({"run_id": run_id, "status": "requested"})
        else:
            typer.echo(run_id)
        raise typer.Exit(EXIT_OK)
    if as_json:
        print_json(progress.as_dict())
    else:
        render(
            [j.as_dict() for j in progress.jobs],
            _JOB_COLUMNS,
            as_json=False,
            title=f"Run {run_id}: {progress.run.status}",
        )
        if progress.run.message:
            typer.echo(progress.run.message)
    if progress.run.status != "finished":
        typer.echo(f"error: run {run_id} {progress.run.status}: {progress.run.message}", err=True)
        raise typer.Exit(2)
    raise typer.Exit(EXIT_FAILED_RECORDS if progress.failed_records else EXIT_OK)


def full_sync(
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Read both sides and report what a full sync would do; write nothing.",
    ),
    examples: int = typer.Option(5, help="With --dry-run: examples per kind of outcome."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; exit 1 if records failed."),
    keep_create_enabled: bool = typer.Option(
        False,
        "--keep-create-enabled",
        help=(
            "At the end keep sync-only-coupled cleared, so new records keep being created "
            "(without either flag a terminal is asked at the end)."
        ),
    ),
    restore_create_setting: bool = typer.Option(
        False,
        "--restore-create-setting",
        help="At the end restore each mapping's sync-only-coupled (the default).",
    ),
    unconditional: bool = typer.Option(
        False,
        "--unconditional",
        help=(
            "Compare every coupled record with its counterpart, not only the ones changed "
            "since the last sync (after adding or fixing a field mapping); reads both tables."
        ),
    ),
    mapping: list[str] = typer.Option([], "--mapping", help="Only these mappings (repeatable)."),
    timeout: float | None = typer.Option(None, help="Give up waiting after this many seconds."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run a full synchronization of every mapping in dependency order."""
    if keep_create_enabled and restore_create_setting:
        fail("--keep-create-enabled and --restore-create-setting exclude each other")
    if dry_run:
        _dry_run(mapping, examples, json, unconditional)
        return
    run_id, progress = run_async(
        _request_and_wait(
            load_settings(),
            "full",
            mapping=mapping,
            keep=keep_create_enabled,
            wait=wait,
            timeout_s=timeout,
            quiet=json,
            # Neither flag on a terminal: the run asks at its end, as BC does.
            ask=not (keep_create_enabled or restore_create_setting) and asks_on_terminal(),
            unconditional=unconditional,
        )
    )
    _finish(run_id, progress, json)


def couple_by_match(
    mapping: list[str] = typer.Option(
        [], "--mapping", help="Only these mappings (repeatable); else every one with match fields."
    ),
    create_new: bool = typer.Option(
        False, "--create-new", help="Create the records no match is found for on the other side."
    ),
    sync_after: bool = typer.Option(
        False, "--sync-after", help="Write the mapped values to the records coupled."
    ),
    bc_id: list[str] = typer.Option(
        [], "--bc-id", help="Only these BC records (repeatable), now, of the one mapping named."
    ),
    dataverse_id: list[str] = typer.Option(
        [], "--dataverse-id", help="Only these Dataverse rows (repeatable), now."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; exit 1 if records failed."),
    timeout: float | None = typer.Option(None, help="Give up waiting after this many seconds."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Couple uncoupled records to their match on the other side (BC's match-based
    coupling): counted coupled, unmatched, or failed when several records match.
    With --bc-id or --dataverse-id only those records are coupled, at once, in a
    job of their own instead of a run."""
    if bc_id or dataverse_id:
        if bc_id and dataverse_id:
            fail("give records of one side: --bc-id or --dataverse-id")
        if len(mapping) != 1:
            fail("name the one mapping the records are of with --mapping")
        side = "bc" if bc_id else "dataverse"
        ids = bc_id or dataverse_id
        perform_action(
            lambda a: a.couple_records(
                mapping[0], side, ids, create_new=create_new, sync_after=sync_after
            ),
            json,
        )
        return
    run_id, progress = run_async(
        _request_and_wait(
            load_settings(),
            "coupling",
            mapping=mapping,
            keep=False,
            wait=wait,
            timeout_s=timeout,
            quiet=json,
            create_new=create_new,
            sync_after=sync_after,
        )
    )
    _finish(run_id, progress, json)


_PREVIEW_COLUMNS = [
    "mapping",
    "direction",
    "would_create",
    "would_couple_by_match",
    "would_update",
    "unchanged",
    "skipped_by_filter",
    "pending_on_lookups",
    "in_conflict",
    "would_fail",
]


def _dry_run(mapping: list[str], examples: int, as_json: bool, unconditional: bool) -> None:
    async def go() -> list[DirectionPreview]:
        async with open_operator(load_settings()) as operator:
            return await operator.dry_run(
                mappings=mapping, examples=examples, unconditional=unconditional
            )

    previews = [p.as_dict() for p in run_async(go())]
    if as_json:
        print_json(previews)
        return
    render(
        previews,
        _PREVIEW_COLUMNS,
        as_json=False,
        title=(
            f"{'Unconditional full' if unconditional else 'Full'} synchronization, "
            "dry run: nothing was written"
        ),
    )


def sync_modified(
    mapping: str | None = typer.Option(None, "--mapping", help="One mapping; all when left out."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; exit 1 if records failed."),
    timeout: float | None = typer.Option(None, help="Give up waiting after this many seconds."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Synchronize records modified since the last sync, for every mapping or one."""
    run_id, progress = run_async(
        _request_and_wait(
            load_settings(),
            "modified",
            mapping=[mapping] if mapping else [],
            keep=False,
            wait=wait,
            timeout_s=timeout,
            quiet=json,
        )
    )
    _finish(run_id, progress, json)
