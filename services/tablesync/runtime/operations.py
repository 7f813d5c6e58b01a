"""Run requests: a full synchronization or a synchronization of modified
records, and following a run's progress. The application layer
(``tablesync.application``) checks the request and calls this.

A request is recorded in the state database first (where a second full
synchronization is refused atomically), then published on the commands
topic for the coordinator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tablesync.adapters.avro import Codec
from tablesync.core.events import FullSyncRequested, SyncModifiedRequested
from tablesync.core.stored import JobTotals, RunRow
from tablesync.core.topics import Topics
from tablesync.ports.clock import Clock
from tablesync.ports.log import Message
from tablesync.ports.state import Jobs

__all__ = ["CommandPublisher", "Operations", "RunProgress"]


class CommandPublisher(Protocol):
    """What a run request needs of the event log: one message published,
    returning only once the broker acknowledged it (``KafkaPublisher`` is one)."""

    async def publish(self, message: Message) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class RunProgress:
    run: RunRow
    jobs: list[JobTotals]

    @property
    def done(self) -> bool:
        return self.run.status in ("finished", "failed", "cancelled")

    @property
    def failed_records(self) -> int:
        return sum(j.counts["failed"] for j in self.jobs)

    def as_dict(self) -> dict[str, object]:
        return {
            "run_id": self.run.run_id,
            "kind": self.run.kind,
            "status": self.run.status,
            "requested_at": self.run.requested_at,
            "started_at": self.run.started_at,
            "finished_at": self.run.finished_at,
            "message": self.run.message,
            "question": self.run.question,
            "jobs": [j.as_dict() for j in self.jobs],
        }


class Operations:
    def __init__(
        self,
        jobs: Jobs,
        publisher: CommandPublisher,
        codec: Codec,
        topics: Topics,
        clock: Clock,
    ) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.codec = codec
        self.topics = topics
        self.clock = clock

    async def full_sync(
        self,
        *,
        mappings: Sequence[str] = (),
        keep_only_coupled_cleared: bool = False,
        unconditional: bool = False,
        ask: bool = False,
        requested_by: str = "cli",
    ) -> str:
        """Requests a full synchronization; ``AlreadyRunning`` names a running one.
        ``ask``: at its end the run asks whether to keep "sync only coupled
        records" cleared instead of taking ``keep_only_coupled_cleared``."""
        run_id = str(uuid.uuid4())
        options: dict[str, object] = {
            "keep_only_coupled_cleared": keep_only_coupled_cleared,
            "unconditional": unconditional,
        }
        if ask:
            # Only when asked for: a run requested without it stores what it did.
            options["ask"] = True
        await self.jobs.request_run(
            run_id,
            "full",
            list(mappings),
            options,
            requested_by,
        )
        command = FullSyncRequested(
            run_id=run_id,
            requested_at=self.clock.now(),
            requested_by=requested_by,
            mappings=tuple(mappings),
            keep_only_coupled_cleared=keep_only_coupled_cleared,
            unconditional=unconditional,
        )
        await self._publish(run_id, command)
        return run_id

    async def couple_by_match(
        self,
        *,
        mappings: Sequence[str] = (),
        create_new: bool = False,
        sync_after: bool = False,
        requested_by: str = "cli",
    ) -> str:
        """Requests a coupling run (BC's match-based coupling); it runs as a full
        synchronization does, never beside one (``AlreadyRunning``)."""
        run_id = str(uuid.uuid4())
        await self.jobs.request_run(
            run_id,
            "coupling",
            list(mappings),
            {"create_new": create_new, "sync_after": sync_after},
            requested_by,
        )
        # The coordinator reads what kind of run it is from the run itself.
        command = FullSyncRequested(
            run_id=run_id,
            requested_at=self.clock.now(),
            requested_by=requested_by,
            mappings=tuple(mappings),
        )
        await self._publish(run_id, command)
        return run_id

    async def sync_modified(self, *, mapping: str | None = None, requested_by: str = "cli") -> str:
        run_id = str(uuid.uuid4())
        await self.jobs.request_run(
            run_id, "modified", [mapping] if mapping else [], {}, requested_by
        )
        command = SyncModifiedRequested(
            run_id=run_id,
            requested_at=self.clock.now(),
            requested_by=requested_by,
            mapping=mapping,
        )
        await self._publish(run_id, command)
        return run_id

    async def _publish(
        self, run_id: str, command: FullSyncRequested | SyncModifiedRequested
    ) -> None:
        await self.publisher.publish(
            Message(self.topics.commands, run_id.encode(), self.codec.encode(command))
        )

    async def progress(self, run_id: str) -> RunProgress | None:
        run = await self.jobs.run(run_id)
        if run is None:
            return None
        jobs = await self.jobs.listing(run_id=run_id, limit=1000)
        return RunProgress(run, sorted(jobs, key=lambda j: j.started_at))

    async def wait(
        self,
        run_id: str,
        *,
        on_progress: Callable[[RunProgress], Awaitable[None]] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
    ) -> RunProgress:
        """Waits until the run ends; ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else self.clock.monotonic() + timeout_s
        while True:
            progress = await self.progress(run_id)
            if progress is None:
                raise LookupError(f"no run {run_id}")
            if on_progress is not None:
                await on_progress(progress)
            if progress.done:
                return progress
            if deadline is not None and self.clock.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {progress.run.status}")
            await asyncio.sleep(poll_s)
