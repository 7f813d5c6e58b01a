"""One consume → process → commit loop, the shape every service that reads a
topic in a consumer group shares (arroyo's: small steps, committing last).

A round: commit the positions a rebalance handed over (below); read a batch;
process it; commit, per partition it covered, the offset the processing says
comes next — only for partitions this member still owns, the others being
someone else's now; then the idle steps, at most once per ``idle_every_s``.
Each step runs until it succeeds, a transient failure tried again after a
pause (``stopping.until_done``). A stop cuts a step short and ends the loop:
what it cut short stays uncommitted, to be read again by whoever reads next.

- ``stop`` is only an event: the loop finishes the batch in hand and commits
  it (or abandons it, uncommitted, where the stop cut a step short) and
  closes the consumer in ``finally``.
- Revoke: the hook waits until the batch in flight is processed and its
  commit tried, so a partition leaves with its work committed (a member may
  still commit while its revoke runs). ``revoking`` is set while it waits: a
  batch waiting on another member (which may be the frozen one the rebalance
  is about) gives way instead (``errors.GaveWay``), dropped as a fenced one.
- Fenced: a batch whose processing finds its partitions taken by another
  member (``errors.Fenced``: this one was frozen past its session timeout)
  is dropped, neither retried nor committed.
- Assign: ``resume`` names the position each partition's effects were stored
  with; the partition is sought there, and that position is committed before
  the next read, so the group's committed offsets (and so its lag) agree
  with what was applied even when a process died between the two commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import structlog

from tablesync.adapters.transient import TRANSIENT
from tablesync.errors import Fenced, GaveWay
from tablesync.ports.clock import Clock
from tablesync.ports.log import (
    ConsumerFactory,
    ConsumerRecord,
    GroupConsumer,
    OffsetReset,
    TopicPartition,
)
from tablesync.runtime.health import Beat, no_beat
from tablesync.runtime.stopping import BACKOFF_S, until_done

__all__ = [
    "Batch",
    "ConsumeLoop",
    "Process",
    "Resume",
    "Subscription",
    "next_offsets",
]

log = structlog.get_logger()

Batch = Mapping[TopicPartition, Sequence[ConsumerRecord]]
Process = Callable[[Batch], Awaitable[Mapping[TopicPartition, int] | None]]
"""Processes a batch and returns, per partition, the offset to commit as the
next one to read; None when a stop cut it short (nothing is committed).
Whatever it raises that is transient makes the loop run it again on the same
batch, so it must be safe to repeat."""
Resume = Callable[[frozenset[TopicPartition]], Awaitable[Mapping[TopicPartition, int]]]
"""For newly assigned partitions, the positions the service stored: where
each resumes instead of at the group's committed offset."""
Step = Callable[[], Awaitable[object]]


def next_offsets(batch: Batch) -> dict[TopicPartition, int]:
    """Past the last record of every partition of ``batch``."""
    return {tp: records[-1].offset + 1 for tp, records in batch.items() if records}


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a loop reads: its group, topics and batch shape."""

    group_id: str
    topics: tuple[str, ...]
    client_id: str
    max_records: int
    wait_ms: int
    auto_offset_reset: OffsetReset = "earliest"
    max_poll_interval_ms: int = 600_000


class ConsumeLoop:
    """Reads ``subscription`` and runs ``process`` on each batch until a stop.

    ``idle`` steps (name, step) run between batches, at most once per
    ``idle_every_s`` of ``clock``; a stop during one ends only that step.
    ``heartbeat`` is called at the start of every round.
    With ``lossy_commit`` the offsets are only a hint: a commit that fails is
    let go rather than retried, and the next batch goes on."""

    def __init__(
        self,
        consumers: ConsumerFactory,
        subscription: Subscription,
        process: Process,
        *,
        what: str,
        clock: Clock,
        resume: Resume | None = None,
        idle: Sequence[tuple[str, Step]] = (),
        idle_every_s: float = 1.0,
        lossy_commit: bool = False,
        backoff_s: Sequence[float] = BACKOFF_S,
        transient: tuple[type[BaseException], ...] = TRANSIENT,
        heartbeat: Beat = no_beat,
    ) -> None:
        self.subscription = subscription
        self._heartbeat = heartbeat
        self.what = what
        self._consumers = consumers
        self._process = process
        self._clock = clock
        self._resume = resume
        self._idle_steps = tuple(idle)
        self._idle_every_s = idle_every_s
        self._lossy_commit = lossy_commit
        self._backoff_s = tuple(backoff_s)
        self._transient = transient
        self._consumer: GroupConsumer | None = None
        # Set while no batch is in flight: what a revoke waits for.
        self._no_batch = asyncio.Event()
        self._no_batch.set()
        self.revoking = asyncio.Event()
        """Set while a revoke waits for the batch in flight."""
        # Positions resumed from on assignment, to commit before the next read.
        self._handed_over: dict[TopicPartition, int] = {}
        # The offsets this loop committed, per partition: never committed lower.
        self._committed: dict[TopicPartition, int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        s = self.subscription
        started: list[GroupConsumer] = []

        async def start() -> None:
            consumer = self._consumers(
                s.group_id,
                s.topics,
                client_id=s.client_id,
                on_assigned=self._on_assigned,
                on_revoked=self._on_revoked,
                auto_offset_reset=s.auto_offset_reset,
                max_poll_interval_ms=s.max_poll_interval_ms,
            )
            try:
                await consumer.start()
            except BaseException:
                # A new consumer for the next try: one whose start failed
                # half-way is not started again.
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            started.append(consumer)

        # The broker can be away when the loop starts (a standby taking over
        # a lease during a broker restart): waited for, like any step.
        if not await self._step(stop, start, "start"):
            return
        consumer = self._consumer = started[0]
        idled_at: float | None = None
        try:
            while not stop.is_set():
                self._heartbeat()
                # Outside any batch: a rebalance that makes this commit fail
                # is not held up by it, and its retry sees the new assignment.
                if self._handed_over and not await self._step(
                    stop, self._commit_handed_over, "positions"
                ):
                    break
                batch = await consumer.next_batch(timeout_ms=s.wait_ms, max_records=s.max_records)
                # In flight from the moment it is read (a member's batches are
                # empty once its revoke has begun): a revoke waits for it.
                if batch and not await self._batch(stop, consumer, batch):
                    break
                if self._idle_steps:
                    now = self._clock.monotonic()
                    if idled_at is None or now - idled_at >= self._idle_every_s:
                        idled_at = now
                        for name, step in self._idle_steps:
                            await self._step(stop, step, name)
        finally:
            self._no_batch.set()
            await consumer.stop()

    async def _step(self, stop: asyncio.Event, step: Step, name: str) -> bool:
        """Runs a step until it succeeds (True) or a stop is asked for (False)."""
        return await until_done(
            stop,
            step,
            what=f"{self.what} {name}",
            transient=self._transient,
            backoff_s=self._backoff_s,
        )

    async def _batch(self, stop: asyncio.Event, consumer: GroupConsumer, batch: Batch) -> bool:
        """Processes and commits one batch; False when a stop cut it short.

        A revoke waits until the batch is processed and its commit tried
        once. A commit that failed is tried again only after that: the member
        may have to rejoin its group (which waits for the revoke) before any
        commit can succeed, and the retry commits what it then still owns."""
        self._no_batch.clear()
        try:
            result: list[Mapping[TopicPartition, int] | None] = []

            async def attempt() -> None:
                try:
                    result[:] = [await self._process(batch)]
                except (Fenced, GaveWay) as exc:
                    # Another member owns these partitions now, or is about
                    # to, and applies them from the stored positions: this
                    # batch is dropped, uncommitted, and the rebalance hands
                    # this member its new share.
                    if isinstance(exc, Fenced):
                        log.warning(
                            "batch_fenced",
                            consumer=self.what,
                            partitions=[f"{t}[{p}]" for t, p in exc.partitions],
                        )
                    else:
                        log.info("batch_gave_way", consumer=self.what, records=exc.records)
                    # What this member still owns is read again from the
                    # batch's start (what is applied below it is skipped):
                    # dropped, it would be read past and never applied.
                    owned = consumer.assignment()
                    for tp, records in batch.items():
                        if records and tp in owned:
                            consumer.seek(tp, records[0].offset)
                    result[:] = [{}]

            if not await self._step(stop, attempt, "batch") or result[0] is None:
                return False
            offsets = result[0]
            if not offsets:
                return True
            # Tried even when a stop came during the batch: its effects are
            # done, and a stop only keeps a failing commit from being retried.
            try:
                await self._commit(consumer, offsets)
                return True
            except self._transient as exc:
                if self._lossy_commit:
                    return True
                log.warning(
                    "transient_failure",
                    step=f"{self.what} commit",
                    error=f"{type(exc).__name__}: {exc}",
                )
        finally:
            self._no_batch.set()
        return await self._step(stop, partial(self._commit, consumer, offsets), "commit")

    async def _commit(self, consumer: GroupConsumer, offsets: Mapping[TopicPartition, int]) -> None:
        owned = consumer.assignment()
        mine = {tp: off for tp, off in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            # Revoked while the batch ran: its new owner resumes from what the
            # service stored, and commits that.
            log.info(
                "commit_skipped_not_owned",
                consumer=self.what,
                partitions=sorted(
                    f"{tp.topic}[{tp.partition}]" for tp in offsets if tp not in mine
                ),
            )
        await consumer.commit(mine)
        for tp, off in mine.items():
            self._committed[tp] = max(off, self._committed.get(tp, off))

    async def _commit_handed_over(self) -> None:
        """Commits the positions resumed from on assignment: a process that
        died between storing its effects and committing its offsets left the
        group's offsets behind, and its lag would show those events as
        unapplied until the partition's next event."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        pending = dict(self._handed_over)
        await self._commit(
            self._consumer,
            {
                tp: max(off, self._committed.get(tp, off))
                for tp, off in pending.items()
                if tp in owned
            },
        )
        for tp, off in pending.items():
            # One assigned again meanwhile keeps its newer position to commit.
            if self._handed_over.get(tp) == off:
                del self._handed_over[tp]

    async def _on_assigned(self, assigned: frozenset[TopicPartition]) -> None:
        if not assigned or self._resume is None or self._consumer is None:
            return
        positions = await self._resume(assigned)
        for tp, offset in positions.items():
            if tp in assigned:
                self._consumer.seek(tp, offset)
                self._handed_over[tp] = offset

    async def _on_revoked(self, revoked: frozenset[TopicPartition]) -> None:
        if not revoked:
            return
        # The member still owns its partitions until this returns: the batch
        # in flight finishes and commits them first.
        if not self._no_batch.is_set():
            self.revoking.set()
            try:
                await self._no_batch.wait()
            finally:
                self.revoking.clear()
        for tp in revoked:
            self._handed_over.pop(tp, None)
        log.info(
            "partitions_revoked",
            consumer=self.what,
            partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked),
        )
