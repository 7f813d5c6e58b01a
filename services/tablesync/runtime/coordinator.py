"""The coordinator: turns operator commands into ordered per-mapping steps and
runs them one at a time.

A full synchronization or "synchronize modified records" becomes one
``SyncMappingRequested`` per mapping, in dependency order, on the single
partition of the commands topic. The coordinator runs each step to its end —
jobs created, snapshots requested, every partition of every source topic
reported finished — before it commits the step's offset and reads the next,
so a restarted coordinator resumes at the step it was on. Job ids are derived
from the run, mapping and direction, which makes a resumed step find its own
jobs instead of starting new ones. One coordinator runs at a time: it works
while it holds its lease (``runtime.lease``), and a standby takes over when
the holder stops, dies or is cut off from the database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any, Literal

import structlog

from tablesync.adapters.avro import Codec
from tablesync.core import filters
from tablesync.core.events import (
    Direction,
    FullSyncRequested,
    JobStarted,
    SnapshotRequested,
    SyncMappingRequested,
    SyncModifiedRequested,
)
from tablesync.core.mappings import MappingSet, source_side
from tablesync.core.stored import KEEP_ANSWER, KEEP_QUESTION, RunRow
from tablesync.core.topics import Topics
from tablesync.errors import DecodeError
from tablesync.ports.clock import Clock
from tablesync.ports.log import ConsumerFactory, Message, Publisher, TopicPartition
from tablesync.ports.state import Pruned, Singleton, StateStores
from tablesync.runtime import faults
from tablesync.runtime.consume import Batch, ConsumeLoop, Subscription, next_offsets
from tablesync.runtime.health import Loops, unwatched
from tablesync.runtime.lease import Lease, LeasedPublisher
from tablesync.runtime.stopping import sleep_or_stop
from tablesync.runtime.together import together
from tablesync.settings import Settings

__all__ = ["CoordinatorService", "step_job_id"]

log = structlog.get_logger()

_STEP_NAMESPACE = uuid.UUID("9e4b2f0a-7461-626c-6573-636f6f726400")
_POLL_S = 0.5
_CLOSE_CONTINUOUS_EVERY_S = 10.0
# Retention is counted in days: an hourly prune keeps each one small. The
# first waits a while: a coordinator that just took the lease (a start, a
# failover) has its commands to run, and rows days old are never urgent.
_PRUNE_EVERY = timedelta(hours=1)
_FIRST_PRUNE_AFTER = timedelta(minutes=5)


def step_job_id(run_id: str, mapping: str, direction: Direction) -> str:
    return str(uuid.uuid5(_STEP_NAMESPACE, f"{run_id}:{mapping}:{direction}"))


class CoordinatorService:
    def __init__(
        self,
        settings: Settings,
        *,
        stores: StateStores,
        singleton: Singleton,
        publisher: Publisher,
        consumers: ConsumerFactory,
        codec: Codec,
        clock: Clock,
        topics: Topics,
        loops: Loops = unwatched,
    ) -> None:
        self.settings = settings
        self.lease = Lease(
            singleton, what="coordinator", clock=clock, renew_s=settings.sync.lease_renew_s
        )
        self._commands_beat = loops("coordinator commands")
        self._outcomes_beat = loops("coordinator outcomes")
        self._housekeeping_beat = loops(
            "coordinator housekeeping", every_s=_CLOSE_CONTINUOUS_EVERY_S
        )
        self.publisher = LeasedPublisher(publisher, self.lease)
        self.consumers = consumers
        self.codec = codec
        self.clock = clock
        self.topics = topics
        self.jobs = stores.jobs
        self.mappings = stores.mappings
        self._progress = asyncio.Event()
        self.steps_done = 0

    async def run(self, stop: asyncio.Event) -> None:
        await self.lease.serve(stop, self._work, standby=self._standing_by)

    def _standing_by(self) -> None:
        # A coordinator waiting for the lease is a ready standby.
        for beat in (self._commands_beat, self._outcomes_beat, self._housekeeping_beat):
            beat()

    async def _work(self, stop: asyncio.Event) -> None:
        log.info("coordinator_started", epoch=self.lease.epoch)
        await together(self._command_loop(stop), self._outcome_loop(stop), self._housekeeping(stop))

    async def _command_loop(self, stop: asyncio.Event) -> None:
        async def handle(batch: Batch) -> dict[TopicPartition, int] | None:
            for records in batch.values():
                for record in records:
                    if not await self._handle(record.value or b"", stop):
                        return None
            return next_offsets(batch)

        loop = ConsumeLoop(
            self.consumers,
            Subscription(
                f"{self.topics.prefix}tablesync.coordinator",
                (self.topics.commands,),
                client_id="tablesync-coordinator",
                max_records=1,
                wait_ms=500,
                # A step can run for as long as a full sync of one mapping takes.
                max_poll_interval_ms=24 * 3600 * 1000,
            ),
            handle,
            what="coordinator command",
            clock=self.clock,
            backoff_s=(2.0,),
            heartbeat=self._commands_beat,
        )
        await loop.run(stop)

    async def _outcome_loop(self, stop: asyncio.Event) -> None:
        async def hint(batch: Batch) -> dict[TopicPartition, int]:
            # Apply has already written the counters; an outcome only tells
            # the waiting step to look again.
            self._progress.set()
            return next_offsets(batch)

        loop = ConsumeLoop(
            self.consumers,
            Subscription(
                f"{self.topics.prefix}tablesync.coordinator.outcomes",
                (self.topics.outcomes,),
                client_id="tablesync-coordinator-outcomes",
                max_records=500,
                wait_ms=500,
                auto_offset_reset="latest",
            ),
            hint,
            what="coordinator outcomes",
            clock=self.clock,
            # Losing this commit replays outcomes, which are only hints.
            lossy_commit=True,
            heartbeat=self._outcomes_beat,
        )
        await loop.run(stop)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        interval = timedelta(seconds=self.settings.sync.continuous_job_interval_s)
        retention = timedelta(days=self.settings.sync.job_retention_days)
        prune_at = self.clock.now() + _FIRST_PRUNE_AFTER
        while not await sleep_or_stop(stop, _CLOSE_CONTINUOUS_EVERY_S):
            self._housekeeping_beat()
            try:
                await self.jobs.close_continuous_jobs(interval)
            except Exception as exc:
                log.warning("housekeeping_failed", error=str(exc))
            now = self.clock.now()
            if not retention or now < prune_at:
                continue
            try:
                pruned = await self.jobs.prune(now - retention)
            except Exception as exc:
                # Tried again at the next round.
                log.warning("housekeeping_failed", step="prune", error=str(exc))
                continue
            prune_at = now + _PRUNE_EVERY
            self._housekeeping_beat()
            if pruned != Pruned():
                log.info(
                    "jobs_pruned",
                    older_than_days=self.settings.sync.job_retention_days,
                    **pruned.as_dict(),
                )

    # Commands

    async def _handle(self, value: bytes, stop: asyncio.Event) -> bool:
        """Handles one command; False when a stop interrupted it."""
        try:
            command = self.codec.decode(value)
        except DecodeError as exc:
            log.warning("command_undecodable", reason=str(exc))
            return True
        match command:
            case FullSyncRequested():
                await self._expand(
                    command.run_id,
                    "full",
                    list(command.mappings),
                    ignore_only_coupled=True,
                    unconditional=command.unconditional,
                    requested_by=command.requested_by,
                    options={
                        "keep_only_coupled_cleared": command.keep_only_coupled_cleared,
                        "unconditional": command.unconditional,
                    },
                )
            case SyncModifiedRequested():
                names = [command.mapping] if command.mapping else []
                await self._expand(
                    command.run_id,
                    "modified",
                    names,
                    ignore_only_coupled=False,
                    requested_by=command.requested_by,
                    options={},
                )
            case SyncMappingRequested():
                return await self._run_step(command, stop)
            case _:
                log.warning("command_ignored", type=type(command).__name__)
        return True

    async def _expand(
        self,
        run_id: str,
        kind: str,
        names: list[str],
        *,
        ignore_only_coupled: bool,
        unconditional: bool = False,
        requested_by: str,
        options: dict[str, Any],
    ) -> None:
        run = await self.jobs.run(run_id)
        if run is None:
            await self.jobs.request_run(run_id, kind, names, options, requested_by)
            run = await self.jobs.run(run_id)
        assert run is not None
        if run.status not in ("requested",):
            return  # expanded before a restart; its steps are already queued
        mappings = await self.mappings.load()
        unknown = [n for n in names if n not in mappings]
        if unknown:
            await self.jobs.finish_run(
                run_id, "failed", f"unknown mapping(s): {', '.join(unknown)}"
            )
            return
        ordered = [m.name for m in mappings.mappings if not names or m.name in names]
        await self.jobs.start_run(run_id)
        now = self.clock.now()
        steps = [
            SyncMappingRequested(
                run_id=run_id,
                step=i + 1,
                steps=len(ordered),
                mapping=name,
                kind="full" if kind == "full" else "modified",
                requested_at=now,
                ignore_only_coupled=ignore_only_coupled,
                unconditional=unconditional,
            )
            for i, name in enumerate(ordered)
        ]
        await self.publisher.publish_many(
            Message(self.topics.commands, run_id.encode(), self.codec.encode(s)) for s in steps
        )
        log.info(
            "run_started",
            run_id=run_id,
            kind=kind,
            mappings=ordered,
            unconditional=unconditional or None,
        )
        if not steps:
            await self.jobs.finish_run(run_id, "finished", "no mappings")

    async def _run_step(self, step: SyncMappingRequested, stop: asyncio.Event) -> bool:
        run = await self.jobs.run(step.run_id)
        if run is None or run.status != "running":
            if run is not None and run.status == "cancelled":
                log.info("step_not_run", run_id=step.run_id, step=step.step, mapping=step.mapping)
            return True
        mappings = await self.mappings.load()
        if step.mapping not in mappings:
            await self.jobs.finish_run(step.run_id, "failed", f"mapping {step.mapping} vanished")
            return True
        mapping = mappings.get(step.mapping)
        log.info(
            "step_started",
            run_id=step.run_id,
            step=step.step,
            steps=step.steps,
            mapping=step.mapping,
        )
        # BC runs a bidirectional mapping BC -> Dataverse first, then back. Its
        # match-based coupling goes one way, from BC's records where it can: the
        # way back would couple one of two Dataverse records BC found ambiguous.
        directions = mapping.directions()
        if run.kind == "coupling":
            directions = directions[:1]
        for direction in directions:
            job_id = step_job_id(step.run_id, step.mapping, direction)
            if not await self._run_job(step, mappings, direction, job_id, stop, run):
                return False
        if step.step == step.steps and not await self._finish_run(
            step.run_id, run.kind, run.mappings, run.options, stop
        ):
            return False
        self.steps_done += 1
        return True

    async def _run_job(
        self,
        step: SyncMappingRequested,
        mappings: MappingSet,
        direction: Direction,
        job_id: str,
        stop: asyncio.Event,
        run: RunRow,
    ) -> bool:
        mapping = mappings.get(step.mapping)
        side = source_side(direction)
        table = mapping.table(side)
        topic = self.topics.cdc(side, table)
        partitions = len(await self.publisher.partitions_for(topic))
        # A coupling run reads every record as a full synchronization does; its
        # jobs are BC's coupling jobs, and say whether to create and to sync.
        coupling = run.kind == "coupling"
        await self.jobs.create_job(
            job_id,
            run_id=step.run_id,
            mapping=step.mapping,
            direction=direction,
            kind="coupling" if coupling else step.kind,
            job_type="coupling" if coupling else "synchronization",
            ignore_only_coupled=step.ignore_only_coupled and not coupling,
            unconditional=step.unconditional,
            source_topic=topic,
            partitions=partitions,
            create_unmatched=coupling and bool(run.options.get("create_new")),
            sync_after=coupling and bool(run.options.get("sync_after")),
        )
        # Published before it is marked: a crash in between publishes it again
        # on resume, and capture serves one job's snapshot only once.
        if not await self.jobs.snapshot_requested(job_id):
            since = None
            if step.kind == "modified":
                since = await self.jobs.synced_until(step.mapping, direction)
            expr = mapping.filter(side)
            request = SnapshotRequested(
                job_id=job_id,
                mapping=step.mapping,
                side=side,
                table=table,
                kind="modified" if since is not None else "full",
                requested_at=self.clock.now(),
                run_id=step.run_id,
                since=since,
                filter=filters.to_odata(expr) if expr is not None else None,
            )
            started = JobStarted(
                job_id, step.mapping, direction, step.kind, self.clock.now(), step.run_id
            )
            await self.publisher.publish_many(
                [
                    Message(self.topics.outcomes, job_id.encode(), self.codec.encode(started)),
                    Message(self.topics.snapshots, job_id.encode(), self.codec.encode(request)),
                ]
            )
            faults.point("coordinator.after_snapshot_request", step.mapping)
            await self.jobs.mark_snapshot_requested(job_id)
        if not await self._wait_for_job(job_id, partitions, stop):
            return False
        totals = await self.jobs.totals(job_id)
        await self.jobs.finish_job(job_id)
        if totals is not None and not (coupling and not run.options.get("sync_after")):
            # A coupling run that wrote nothing synced nothing: what changed
            # before it is still for the next synchronization of modified records.
            await self.jobs.set_synced_until(
                step.mapping,
                direction,
                totals.started_at,
            )
            log.info(
                "job_finished",
                job_id=job_id,
                mapping=step.mapping,
                direction=direction,
                **totals.counts,
            )
        return True

    async def _wait_for_job(self, job_id: str, partitions: int, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            # A mapping's step lasts as long as its job: each look is a round.
            self._commands_beat()
            totals = await self.jobs.totals(job_id)
            if totals is not None and totals.partitions_finished >= partitions:
                return True
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=_POLL_S)
        return False

    async def _finish_run(
        self,
        run_id: str,
        kind: str,
        names: list[str],
        options: dict[str, Any],
        stop: asyncio.Event,
    ) -> bool:
        """Ends a run whose last step ran; False when a stop came while the run
        waited on its question (a restarted coordinator asks again)."""
        current = await self.jobs.run(run_id)
        if current is None or current.status != "running":
            # Cancelled while its last step ran: nothing of the run's end is done,
            # "sync only coupled records" stays as it was.
            log.info("run_ended_already", run_id=run_id, status=current and current.status)
            return True
        message = ""
        if kind == "full":
            mappings = await self.mappings.load()
            affected = names or list(mappings.names())
            keep = bool(options.get("keep_only_coupled_cleared"))
            how = ""
            if options.get("ask"):
                answer = await self._ask(run_id, affected, stop)
                if answer == "stopped":
                    return False
                if answer == "ended":
                    return True
                keep = answer == "keep"
                how = (
                    " (answered)"
                    if answer != "default"
                    else f" (not answered within {self.settings.sync.keep_question_wait_s:g} s)"
                )
            if keep:
                await self.mappings.set_only_coupled(affected, False)
                message = "sync only coupled records is now cleared on " + ", ".join(affected)
            else:
                message = "sync only coupled records restored on " + ", ".join(affected)
            message += how
        await self.jobs.finish_run(run_id, "finished", message)
        log.info("run_finished", run_id=run_id, kind=kind, message=message)
        return True

    async def _ask(
        self, run_id: str, affected: list[str], stop: asyncio.Event
    ) -> Literal["keep", "restore", "default", "ended", "stopped"]:
        """BC's question at the end of a full synchronization: keep "sync only
        coupled records" cleared? Waits for the operator's answer up to
        ``sync.keep_question_wait_s``; unanswered, the setting is restored."""
        if not await self.jobs.ask_run(run_id, KEEP_QUESTION):
            return "ended"
        wait_s = self.settings.sync.keep_question_wait_s
        log.info(
            "run_asks", run_id=run_id, question=KEEP_QUESTION, mappings=affected, wait_s=wait_s
        )
        deadline = self.clock.monotonic() + wait_s
        while True:
            # Waiting on the operator is this step's round, as a job is.
            self._commands_beat()
            run = await self.jobs.run(run_id)
            if run is None or run.status != "running":
                log.info("run_ended_already", run_id=run_id, status=run and run.status)
                return "ended"
            answer = run.options.get(KEEP_ANSWER)
            if answer is not None:
                log.info("run_answered", run_id=run_id, keep=bool(answer))
                return "keep" if answer else "restore"
            if self.clock.monotonic() >= deadline:
                log.info("run_not_answered", run_id=run_id, wait_s=wait_s)
                return "default"
            if await sleep_or_stop(stop, _POLL_S):
                return "stopped"
