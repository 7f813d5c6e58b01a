"""``Operator``: every operator operation with its checks, for the CLI and the admin API."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import Topics
from tablesync.application.dryrun import DirectionPreview, dry_run
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import LogEntry
from tablesync.core.events import Side
from tablesync.core.mappings import MappingSet, TableMapping, direction_of
from tablesync.core.records import Row
from tablesync.core.stored import (
    COORDINATOR_LEASE,
    KEEP_ANSWER,
    CouplingRow,
    JobError,
    JobTotals,
    ProblemRecord,
    RunRow,
    Selection,
)
from tablesync.errors import (
    ClaimLost,
    ClaimsBusy,
    CommandRefused,
    InvalidRequest,
    MappingError,
    NotCoupled,
    NotFound,
    RecordNotFound,
    UnknownMapping,
)
from tablesync.ports.api import SideApi
from tablesync.ports.claims import PairClaims
from tablesync.ports.clock import Clock
from tablesync.ports.log import LogWindow
from tablesync.ports.state import Pruned, StateStores
from tablesync.runtime.actions import ActionResult, Actions
from tablesync.runtime.operations import CommandPublisher, Operations, RunProgress
from tablesync.runtime.replay import ReplayResult, replay
from tablesync.settings import SyncSettings

__all__ = ["MAX_RECORD_LOG", "ApiOpener", "ClaimsOpener", "Operator"]

log = structlog.get_logger()

ApiOpener = Callable[[Side], Awaitable[SideApi]]
"""A side's API, opened on first use and kept by whoever opened it: a command
that touches no side never needs one reachable (BC's is checked on opening)."""

ClaimsOpener = Callable[[], PairClaims]
"""A holder of pair claims of its own for one command, closed when it ends:
commands can run side by side (the admin API's requests), and one holder's
release frees every record it holds."""

_SIDES: tuple[Side, ...] = ("bc", "dataverse")
MAX_RECORD_LOG = 1000
"""The most record log rows one request reads."""
_MAPPING_CHANGES = ("direction", "sync_only_coupled", "table_filter", "integration_table_filter")
# No stamps: the first change of either record after a manual coupling syncs it.
_UNSYNCED = Stamp(None, None)


class Operator:
    """The operator's operations on one state database, its topics and both sides."""

    def __init__(
        self,
        *,
        stores: StateStores,
        apis: ApiOpener,
        publisher: CommandPublisher,
        window: LogWindow,
        codec: Codec,
        clock: Clock,
        topics: Topics,
        settings: SyncSettings,
        claims: ClaimsOpener,
    ) -> None:
        self.stores = stores
        self.claims = claims
        self.apis = apis
        self.window = window
        self.codec = codec
        self.clock = clock
        self.topics = topics
        self.settings = settings
        self._runs = Operations(stores.jobs, publisher, codec, topics, clock)

    # Mappings

    async def mappings(self) -> MappingSet:
        """The mappings in force; ``CommandRefused`` when none are loaded."""
        try:
            return await self.stores.mappings.load()
        except LookupError as exc:
            raise CommandRefused(str(exc)) from None

    async def mapping(self, name: str) -> TableMapping:
        return (await self._known(name)).get(name)

    async def load_mappings(
        self, document: dict[str, Any], *, requested_by: str = "cli"
    ) -> MappingSet:
        """Validates a mappings document and makes it the mappings in force."""
        loaded = await self.stores.mappings.replace_all(document)
        log.info("mappings_loaded", mappings=list(loaded.names()), requested_by=requested_by)
        return loaded

    async def change_mapping(
        self,
        name: str,
        *,
        direction: str | None = None,
        sync_only_coupled: bool | None = None,
        table_filter: str | None = None,
        integration_table_filter: str | None = None,
        requested_by: str = "cli",
    ) -> TableMapping:
        """Changes a mapping's direction, sync-only-coupled or filters (an empty
        filter text clears it); an invalid result is refused and nothing is stored."""
        given = {
            k: v
            for k, v in zip(
                _MAPPING_CHANGES,
                (direction, sync_only_coupled, table_filter, integration_table_filter),
                strict=True,
            )
            if v is not None
        }
        if not given:
            raise InvalidRequest("nothing to change: give one of " + ", ".join(_MAPPING_CHANGES))
        await self._known(name)
        try:
            changed = await self.stores.mappings.change(
                name,
                direction=direction,
                sync_only_coupled=sync_only_coupled,
                table_filter=table_filter,
                integration_table_filter=integration_table_filter,
            )
        except MappingError as exc:
            raise MappingError(f"invalid change of {name}: {exc}", path=exc.path) from exc
        except KeyError:
            # Removed between the check above and the change.
            raise UnknownMapping([name], (await self.mappings()).names()) from None
        except LookupError as exc:
            raise CommandRefused(str(exc)) from None
        log.info("mapping_changed", mapping=name, fields=sorted(given), requested_by=requested_by)
        return changed

    # Runs

    async def full_sync(
        self,
        *,
        mappings: Sequence[str] = (),
        keep_only_coupled_cleared: bool = False,
        unconditional: bool = False,
        ask: bool = False,
        requested_by: str = "cli",
    ) -> str:
        """Requests a full synchronization of every mapping (or the ones named);
        ``AlreadyRunning`` names the one requested or running. ``unconditional``
        compares every coupled record with its counterpart, not only the ones
        changed since the last sync (BC's "Run Unconditional Full Synch.").
        ``ask``: at its end the run asks whether to keep "sync only coupled
        records" cleared (``answer``) instead of taking
        ``keep_only_coupled_cleared``; unanswered, the setting is restored."""
        await self._known(*mappings)
        await self._release_stale_runs()
        run_id = await self._runs.full_sync(
            mappings=list(mappings),
            keep_only_coupled_cleared=keep_only_coupled_cleared,
            unconditional=unconditional,
            ask=ask,
            requested_by=requested_by,
        )
        log.info(
            "run_requested",
            kind="full",
            run_id=run_id,
            unconditional=unconditional or None,
            requested_by=requested_by,
        )
        return run_id

    async def couple_by_match(
        self,
        *,
        mappings: Sequence[str] = (),
        create_new: bool = False,
        sync_after: bool = False,
        requested_by: str = "cli",
    ) -> str:
        """Requests a coupling run: each uncoupled record of the mappings (all,
        or those named) is coupled to the one uncoupled record of the other
        side its match fields find; with ``create_new`` those without a match
        are created, with ``sync_after`` the values are written to what is
        coupled. Ambiguous matches fail and are listed. Named, a mapping without
        match fields is refused; unnamed, those are left out."""
        known = await self._known(*mappings)
        if mappings:
            blind = [n for n in mappings if not known.get(n).match]
            if blind:
                raise InvalidRequest(
                    f"{', '.join(blind)} has no match fields: a coupling run cannot match "
                    "its records"
                )
            names = list(mappings)
        else:
            names = [m.name for m in known.mappings if m.match]
        await self._release_stale_runs()
        run_id = await self._runs.couple_by_match(
            mappings=names,
            create_new=create_new,
            sync_after=sync_after,
            requested_by=requested_by,
        )
        log.info("run_requested", kind="coupling", run_id=run_id, requested_by=requested_by)
        return run_id

    async def sync_modified(self, *, mapping: str | None = None, requested_by: str = "cli") -> str:
        """Requests a synchronization of modified records of every mapping or one."""
        if mapping is not None:
            await self._known(mapping)
        await self._release_stale_runs()
        run_id = await self._runs.sync_modified(mapping=mapping, requested_by=requested_by)
        log.info(
            "run_requested",
            kind="modified",
            run_id=run_id,
            mapping=mapping,
            requested_by=requested_by,
        )
        return run_id

    async def _release_stale_runs(self) -> None:
        """Ends the runs no coordinator has worked on for ``stale_run_after_s``
        (it died for good, or none was ever started), so they block no new run."""
        after_s = self.settings.stale_run_after_s
        if not after_s:
            return
        message = (
            f"released: no coordinator held its lease for {after_s:g} s; "
            "the steps not run did not start"
        )
        for run_id in await self.stores.jobs.release_stale_runs(
            COORDINATOR_LEASE, after_s, message
        ):
            log.warning("run_released", run_id=run_id, after_s=after_s)

    async def runs(self, *, limit: int = 20) -> list[RunRow]:
        return await self.stores.jobs.runs(limit=limit)

    async def cancel(self, run_id: str, *, requested_by: str = "cli") -> RunRow:
        """Cancels a requested or running run at once: the step running goes on
        to its end (its mapping's job counts what it did), the steps after it
        never start, and another full synchronization may start. A run whose
        coordinator is gone is released the same way."""
        run_id = _guid(run_id, "run id")
        message = (
            f"cancelled by {requested_by}: the step running then finished its job, "
            "the steps after it did not start"
        )
        if not await self.stores.jobs.cancel_run(run_id, message):
            run = await self.stores.jobs.run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id}", what="run")
            raise CommandRefused(f"run {run_id} ended already ({run.status})")
        run = await self.stores.jobs.run(run_id)
        assert run is not None
        log.info("run_cancelled", run_id=run_id, requested_by=requested_by)
        return run

    async def answer(self, run_id: str, keep: bool, *, requested_by: str = "cli") -> RunRow:
        """Answers the question a full synchronization asks at its end: keep
        "sync only coupled records" cleared on its mappings (``keep``) or restore
        it. Refused when the run asks nothing, was answered or ended."""
        run_id = _guid(run_id, "run id")
        if not await self.stores.jobs.answer_run(run_id, keep):
            run = await self.stores.jobs.run(run_id)
            if run is None:
                raise NotFound(f"no run {run_id}", what="run")
            if run.status not in ("requested", "running"):
                raise CommandRefused(f"run {run_id} ended already ({run.status})")
            if KEEP_ANSWER in run.options:
                raise CommandRefused(f"run {run_id} was answered already")
            raise CommandRefused(f"run {run_id} asks nothing")
        run = await self.stores.jobs.run(run_id)
        assert run is not None
        log.info("run_answer", run_id=run_id, keep=keep, requested_by=requested_by)
        return run

    async def progress(self, run_id: str) -> RunProgress:
        run_id = _guid(run_id, "run id")
        progress = await self._runs.progress(run_id)
        if progress is None:
            raise NotFound(f"no run {run_id}", what="run")
        return progress

    async def wait(
        self,
        run_id: str,
        *,
        on_progress: Callable[[RunProgress], Awaitable[None]] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
    ) -> RunProgress:
        """Waits until the run ends; ``TimeoutError`` after ``timeout_s``."""
        run_id = _guid(run_id, "run id")
        try:
            return await self._runs.wait(
                run_id, on_progress=on_progress, timeout_s=timeout_s, poll_s=poll_s
            )
        except LookupError:
            raise NotFound(f"no run {run_id}", what="run") from None

    async def dry_run(
        self, *, mappings: Sequence[str] = (), examples: int = 5, unconditional: bool = False
    ) -> list[DirectionPreview]:
        """What a full synchronization (``unconditional`` or not) would do, read
        from both sides; writes nothing."""
        known = await self._known(*mappings)
        couplings = {name: await self.stores.couplings.of_mapping(name) for name in known.names()}
        return await dry_run(
            known,
            await self._both_apis(),
            couplings,
            self.clock,
            only=mappings,
            examples=examples,
            settings=self.settings,
            unconditional=unconditional,
        )

    # Jobs and their errors

    async def jobs(
        self,
        *,
        run_id: str | None = None,
        mapping: str | None = None,
        limit: int = 50,
        company: str | None = None,
    ) -> list[JobTotals]:
        return await self.stores.jobs.listing(
            run_id=_guid(run_id, "run id") if run_id else None,
            mapping=mapping,
            limit=limit,
            company=company,
        )

    async def job(self, job_id: str) -> JobTotals:
        job_id = _guid(job_id, "job id")
        totals = await self.stores.jobs.totals(job_id)
        if totals is None:
            raise NotFound(f"no job {job_id}", what="job")
        return totals

    async def job_errors(
        self, *, job_id: str | None = None, mapping: str | None = None, limit: int = 100
    ) -> list[JobError]:
        """Error rows, newest first: of one job (which must exist), or of every job."""
        if job_id is not None:
            job_id = (await self.job(job_id)).job_id
        return await self.stores.jobs.errors(job_id=job_id, mapping=mapping, limit=limit)

    async def record_log(
        self, mapping: str, side: str, record_id: str, *, limit: int = 50
    ) -> list[LogEntry]:
        """What tablesync decided and wrote for one record (``side`` is the side
        ``record_id`` is on), newest first, each decision with the job it
        counted in: its own decisions and its counterpart's that name it. Kept
        as long as their jobs (``TABLESYNC_SYNC__JOB_RETENTION_DAYS``)."""
        which = _side(side)
        rid = _guid(record_id, f"{which} record id")
        if not 1 <= limit <= MAX_RECORD_LOG:
            raise InvalidRequest(f"limit {limit} is not between 1 and {MAX_RECORD_LOG}")
        await self._known(mapping)
        return await self.stores.jobs.record_log(mapping, which, rid, limit=limit)

    async def prune_jobs(self, older_than_days: float | None = None) -> tuple[datetime, Pruned]:
        """Deletes the jobs that ended more than ``older_than_days`` ago (the
        retention setting when None), their rows and the runs left without
        jobs; returns the cutoff and what went."""
        days = self.settings.job_retention_days if older_than_days is None else older_than_days
        if days <= 0:
            raise InvalidRequest(
                "give the age of the jobs to prune in days (--older-than): "
                "TABLESYNC_SYNC__JOB_RETENTION_DAYS is 0, which keeps every job"
                if older_than_days is None
                else f"--older-than {older_than_days:g} is not a number of days above 0"
            )
        before = self.clock.now() - timedelta(days=days)
        pruned = await self.stores.jobs.prune(before)
        log.info("jobs_pruned", older_than_days=days, **pruned.as_dict())
        return before, pruned

    async def problems(self, selection: Selection, *, limit: int = 1000) -> list[ProblemRecord]:
        """Records that did not sync: pending, failed (retried) or skipped."""
        return await self.stores.problems.records(selection, limit=limit)

    # Couplings

    async def couplings(
        self, *, mapping: str | None = None, search: str | None = None, limit: int = 100
    ) -> list[CouplingRow]:
        return await self.stores.couplings.listing(mapping, search=search or None, limit=limit)

    async def couple(
        self, mapping: str, bc_id: str, dataverse_id: str, *, requested_by: str = "cli"
    ) -> CouplingRow:
        """Couples a BC record with a Dataverse row; neither record is changed and
        the next change of either one syncs. Both records must exist on their
        sides (``RecordNotFound``), and neither may be coupled to another record
        of the mapping (``AlreadyCoupled``: uncouple it first), checked with both
        records claimed, after any apply instance deciding one of them has
        committed; coupling a pair again marks it unsynced."""
        ids: dict[Side, str] = {
            "bc": _guid(bc_id, "bc id"),
            "dataverse": _guid(dataverse_id, "dataverse id"),
        }
        known = await self._known(mapping)
        m = known.get(mapping)
        rows: dict[Side, Row] = {}
        for side in _SIDES:
            rows[side] = await self._record(m, side, ids[side])
        key = rows["bc"].fields.get(m.bc_key) if m.bc_key else None
        bc_key = key.strip() if isinstance(key, str) and key.strip() else None
        coupling = Coupling(mapping, ids["bc"], ids["dataverse"], bc_key, _UNSYNCED, _UNSYNCED)
        async with self._claiming("couple") as claims:
            actions = self._actions(known, await self._both_apis(), claims)
            await actions.couple(coupling)
        listed = await self.stores.couplings.listing(mapping, search=ids["bc"], limit=1)
        if not listed or listed[0].coupling.dv_id != ids["dataverse"]:
            raise CommandRefused(
                f"{mapping}: the coupling of bc record {ids['bc']} was changed meanwhile"
            )
        log.info(
            "coupled",
            mapping=mapping,
            bc_id=ids["bc"],
            dataverse_id=ids["dataverse"],
            requested_by=requested_by,
        )
        return listed[0]

    async def uncouple(
        self, mapping: str, side: str, record_id: str, *, requested_by: str = "cli"
    ) -> Coupling:
        """Removes the coupling of one record (``side`` is the side ``record_id``
        belongs to), in an uncoupling job; neither record is changed."""
        which = _side(side)
        rid = _guid(record_id, f"{which} record id")
        known = await self._known(mapping)
        async with self._claiming("uncouple") as claims:
            removed = await self._actions(known, {}, claims).uncouple(mapping, which, rid)
        if removed is None:
            raise NotCoupled(mapping, which, rid)
        log.info(
            "uncoupled",
            mapping=mapping,
            bc_id=removed.bc_id,
            dataverse_id=removed.dv_id,
            requested_by=requested_by,
        )
        return removed

    # Recovery actions on the errors list

    async def retry(self, selection: Selection) -> ActionResult:
        """Clears the skip of the selected records and syncs them now, each in its direction."""
        selection, known = await self._selected(selection)
        apis = await self._both_apis()
        async with self._claiming("retry") as claims:
            return await self._actions(known, apis, claims).retry(selection)

    async def sync_now(
        self, mapping: str, side: str, record_id: str, *, requested_by: str = "cli"
    ) -> ActionResult:
        """Synchronizes one record now (``side`` is the side ``record_id`` is
        on), healthy or not: a coupled pair compared field by field in each
        direction, an uncoupled record matched, coupled or created. Its jobs
        count what it did."""
        which = _side(side)
        rid = _guid(record_id, f"{which} record id")
        known = await self._known(mapping)
        apis = await self._both_apis()
        async with self._claiming("sync") as claims:
            result = await self._actions(known, apis, claims).sync_now(mapping, which, rid)
        log.info(
            "record_synced",
            mapping=mapping,
            side=which,
            record_id=rid,
            requested_by=requested_by,
            **dict(result.counts),
        )
        return result

    async def couple_records(
        self,
        mapping: str,
        side: str,
        record_ids: Sequence[str],
        *,
        create_new: bool = False,
        sync_after: bool = False,
        requested_by: str = "cli",
    ) -> ActionResult:
        """BC's match-based coupling of selected records (``side`` is the side
        the ids are on), now, in a coupling job of its own: each uncoupled one
        is coupled to its one match, or created with ``create_new``; ambiguous
        ones fail and are listed; coupled ones are left alone."""
        which = _side(side)
        ids = list(dict.fromkeys(_guid(r, f"{which} record id") for r in record_ids))
        if not ids:
            raise InvalidRequest("name at least one record to couple")
        known = await self._known(mapping)
        m = known.get(mapping)
        if not m.match:
            raise InvalidRequest(f"{mapping} has no match fields: its records cannot be matched")
        if not m.allows(direction_of(which)):
            raise InvalidRequest(
                f"{mapping} does not sync from {which} ({m.direction}): couple its records "
                "from the other side"
            )
        apis = await self._both_apis()
        async with self._claiming("couple-by-match") as claims:
            result = await self._actions(known, apis, claims).couple_records(
                mapping, which, ids, create_new=create_new, sync_after=sync_after
            )
        log.info(
            "records_coupled_by_match",
            mapping=mapping,
            side=which,
            records=len(ids),
            requested_by=requested_by,
            **dict(result.counts),
        )
        return result

    async def restore(self, selection: Selection) -> ActionResult:
        """Re-creates the deleted record of each selected coupling from the surviving side."""
        selection, known = await self._selected(selection)
        apis = await self._both_apis()
        async with self._claiming("restore") as claims:
            return await self._actions(known, apis, claims).restore(selection)

    async def delete_records(self, selection: Selection, *, confirmed: bool) -> ActionResult:
        """Deletes the surviving record of each selected coupling whose other record is gone."""
        selection, known = await self._selected(selection)
        if not confirmed:
            raise CommandRefused("delete-records deletes records on a side; confirm it (--yes)")
        apis = await self._both_apis()
        async with self._claiming("delete-records") as claims:
            return await self._actions(known, apis, claims).delete_records(selection)

    async def delete_couplings(self, selection: Selection) -> ActionResult:
        """Removes the selected couplings; neither record changes."""
        selection, known = await self._selected(selection)
        async with self._claiming("delete-couplings") as claims:
            return await self._actions(known, {}, claims).delete_couplings(selection)

    async def find_deleted(self, mapping: str | None = None) -> ActionResult:
        """Flags couplings whose record no longer exists on either side."""
        known = await self._known(*((mapping,) if mapping else ()))
        apis = await self._both_apis()
        async with self._claiming("find-deleted") as claims:
            return await self._actions(known, apis, claims).find_deleted(mapping)

    async def replay(
        self, mapping: str, *, since: datetime, until: datetime | None = None
    ) -> ReplayResult:
        """Applies again the changes captured in [since, until) (until now when
        left out) under the mapping as it is now. Times without a zone are UTC."""
        since = _aware(since)
        until = _aware(until) if until is not None else None
        if until is not None and until <= since:
            raise InvalidRequest(
                f"the window ends ({until.isoformat()}) before it starts ({since.isoformat()})"
            )
        known = await self._known(mapping)
        apis = await self._both_apis()
        async with self._claiming("replay") as claims:
            return await replay(
                mapping=mapping,
                since=since,
                until=until,
                stores=self.stores,
                window=self.window,
                apis=apis,
                mappings=known,
                topics=self.topics,
                settings=self.settings,
                codec=self.codec,
                clock=self.clock,
                claims=claims,
            )

    # shared

    async def _known(self, *names: str) -> MappingSet:
        """The mappings in force, with each of ``names`` among them."""
        mappings = await self.mappings()
        unknown = [n for n in dict.fromkeys(names) if n not in mappings]
        if unknown:
            raise UnknownMapping(unknown, mappings.names())
        return mappings

    async def _selected(self, selection: Selection) -> tuple[Selection, MappingSet]:
        if selection.is_empty():
            raise InvalidRequest(
                "say which records: ids, --mapping, --since, or --all for every record listed"
            )
        known = await self._known(*((selection.mapping,) if selection.mapping else ()))
        ids = tuple(_guid(i, "record id") for i in selection.record_ids)
        since = _aware(selection.since) if selection.since is not None else None
        return replace(selection, record_ids=ids, since=since), known

    async def _record(self, m: TableMapping, side: Side, record_id: str) -> Row:
        table = m.table(side)
        api = await self.apis(side)
        row = (await api.get_many(table, [record_id])).get(record_id)
        if row is None:
            raise RecordNotFound(side, table, record_id)
        return row

    async def _both_apis(self) -> dict[Side, SideApi]:
        return {side: await self.apis(side) for side in _SIDES}

    def _actions(
        self, mappings: MappingSet, apis: dict[Side, SideApi], claims: PairClaims
    ) -> Actions:
        return Actions(
            stores=self.stores,
            apis=apis,
            mappings=mappings,
            settings=self.settings,
            codec=self.codec,
            clock=self.clock,
            claims=claims,
        )

    @contextlib.asynccontextmanager
    async def _claiming(self, command: str) -> AsyncIterator[PairClaims]:
        """The claims of one command (``ClaimsOpener``), closed when it ends.
        Records another instance keeps deciding, or a claim lost under the
        command, refuse it with the mapping named."""
        claims = self.claims()
        try:
            yield claims
        except ClaimsBusy as exc:
            raise CommandRefused(
                f"{exc.mapping}: {command} waited more than {self.settings.claim_wait_s:g} s "
                f"for {exc.records} records another instance of the mapping is deciding "
                "(TABLESYNC_SYNC__CLAIM_WAIT_S); it decided none of the records it had not "
                "reached yet: try again"
            ) from exc
        except ClaimLost as exc:
            raise CommandRefused(
                f"{exc.mapping}: {command} lost its claim on the records it was deciding "
                "(its connection to the state database was cut) and committed none of "
                "them: try again"
            ) from exc
        finally:
            await claims.close()


def _guid(value: str, what: str) -> str:
    """``value`` as the lower-case GUID string every store and side keys by."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequest(f"{what} {value!r} is not a GUID") from None


def _side(value: str) -> Side:
    if value == "bc":
        return "bc"
    if value == "dataverse":
        return "dataverse"
    raise InvalidRequest(f"side {value!r} is neither bc nor dataverse")


def _aware(moment: datetime) -> datetime:
    """Times given without a zone are UTC, like every stamp tablesync keeps."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
