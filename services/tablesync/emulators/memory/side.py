"""``MemorySide``: one side's API (``SideApi``) as the connector and emulator pair
behaves, on rows kept in memory, for the deterministic simulator.

As seen through ``SideApi`` it is held to the real pair by the contract suite
(``tests/contract/test_side_api.py``). Differences that suite does not cover:

- BC error messages lack the ``  CorrelationId:  <guid>.`` BC appends;
- text order in filters is by code point, where the emulator's database collates;
  ``searchName`` upper-cases with Python's rules, not the database's;
- calls are never concurrent and never partly applied unless a fault says so; a write
  applies its ops in order (the connector may send batches of one call in parallel);
- a delta link is the side's own text (the emulator's is a URL): only its behaviour is
  shared.

Every awaitable method passes through ``_pause`` before each request it stands for,
and a write once more after its ops took effect, so a scheduler overriding ``_pause``
can interleave or crash a task at each of those points. Users of the side
(``user_create`` …) write synchronously, with the same rules, and never suffer faults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import parse_qs, quote, urlsplit

from tablesync.adapters.odata.base import as_guids, classify, id_filter
from tablesync.adapters.odata.bc import STALE_CODES
from tablesync.adapters.odata.entities import default_spec
from tablesync.adapters.odata.stats import ApiStats
from tablesync.core.events import Side
from tablesync.core.filters import MAX_LENGTH, Expr, evaluate, to_odata
from tablesync.core.records import (
    Changes,
    Create,
    Delete,
    Missing,
    Rejected,
    Row,
    Update,
    WriteOp,
    WriteResult,
    WriteValue,
    Written,
)
from tablesync.emulators.bc.service import version_of as bc_version_of
from tablesync.emulators.bc.style import BC_STYLE
from tablesync.emulators.common.filtersql import compile_filter
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Params
from tablesync.emulators.dataverse.style import DATAVERSE_STYLE
from tablesync.emulators.dataverse.tracking import EXPIRED_MESSAGE, TRACK_CHANGES
from tablesync.emulators.memory.bc import BcWrites
from tablesync.emulators.memory.dataverse import DataverseWrites
from tablesync.emulators.memory.faults import Faults, Outage
from tablesync.emulators.memory.store import IdSource, Store, Stored, Table
from tablesync.errors import (
    ApiError,
    ApiUnavailable,
    ChangeTrackingUnavailable,
    DeltaLinkExpired,
    ReadRefused,
    ReadUnauthorized,
    RecordRejected,
)
from tablesync.ports.clock import Clock

__all__ = ["MemorySide"]

DEFAULT_PAGE_SIZE = 50
_NO_STAMP = datetime(1, 1, 1, tzinfo=UTC)
CHANGE_RETENTION = timedelta(days=7)
"""How long a delta link stays valid, as Dataverse's ``ExpireChangeTrackingInDays``."""


class _Writes(Protocol):
    def create(
        self,
        entity_set: str,
        values: dict[str, WriteValue],
        record_id: str | None,
        caller: str | None,
        *,
        only_new: bool = False,
    ) -> Stored: ...

    def update(
        self,
        entity_set: str,
        record_id: str,
        values: dict[str, WriteValue],
        etag: str | None,
        caller: str | None,
    ) -> Stored: ...

    def delete(self, entity_set: str, record_id: str, etag: str | None) -> None: ...


class MemorySide:
    """``SideApi`` for ``side`` over in-memory tables of the default catalog.

    ``clock`` stamps every write (at the side's precision: BC milliseconds, Dataverse
    seconds); ``ids`` names new records (default: a fixed sequence of UUIDs);
    ``page_size`` is the connector's ``odata.maxpagesize``. ``faults`` holds the
    failures the next calls suffer. Dataverse tables track changes unless named in
    ``untracked`` (``ChangeTrackingEnabled`` false); BC's never do.
    """

    def __init__(
        self,
        side: Side,
        clock: Clock,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        ids: IdSource | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.side: Side = side
        self.store = Store(side, clock, ids)
        self.faults = Faults()
        self.stats = ApiStats(side)
        self.page_size = page_size
        self._writes: _Writes
        self._dataverse: DataverseWrites | None = None
        self.untracked: set[str] = set()
        self.change_retention = CHANGE_RETENTION
        self._links_issued = 0
        self._expired_upto = 0
        if side == "bc":
            self._writes = BcWrites(self.store)
            self._style = BC_STYLE
            self._stale_codes = STALE_CODES
        else:
            self._dataverse = self._writes = DataverseWrites(self.store)
            self._style = DATAVERSE_STYLE
            self._stale_codes = frozenset()

    @property
    def integration_user(self) -> str | None:
        """Dataverse: the ``systemuserid`` the connector writes as (None on BC)."""
        return self._dataverse.integration_user if self._dataverse is not None else None

    # ------------------------------------------------------------ scheduling points

    async def _pause(self, what: str) -> None:
        """Every request passes here first; a scheduler overrides it to interleave or
        crash at this point. ``what`` names the call: ``"bc.write customers"``."""

    async def _call(self, method: str, entity_set: str, expr: Expr | None = None) -> Outage | None:
        """One request: the pause, any throttling, then the outage it suffers, if any.
        Reads raise it here, and a refusal of a read (``expr``: its filter); a write
        gets its outage back to apply what it says first."""
        what = f"{self.side}.{method} {entity_set}"
        await self._pause(what)
        if self.faults.active:
            for _ in range(self.faults.waits(method, entity_set)):
                self.stats.throttled += 1
                await self._pause(f"{what} throttled")
            outage = self.faults.outage(method, entity_set)
            if outage is not None:
                self.stats.unavailable += 1
                if method != "write":
                    raise self._unavailable(method, entity_set, outage, applied=False)
                self.stats.requests += 1
                return outage
            refused = (
                self.faults.read_refusal(method, entity_set, expr) if method != "write" else None
            )
            if refused is not None:
                self.stats.requests += 1
                raise _refused(
                    self.side, entity_set, refused.status, f"GET {entity_set}: ", refused.message
                )
        self.stats.requests += 1
        return None

    def _unavailable(
        self, method: str, entity_set: str, outage: Outage, *, applied: bool
    ) -> ApiUnavailable:
        verb = "POST" if method == "write" else "GET"
        target = f"{entity_set}/$batch" if method == "write" else entity_set
        if applied:
            reason = f"status {outage.status}; not retried because the server may have applied it"
        else:
            reason = f"gave up after retries; last status {outage.status}"
        return ApiUnavailable(f"{verb} {target}: {reason}", side=self.side, status=outage.status)

    # ------------------------------------------------------------ reads

    def _read_error(self, entity_set: str, problem: ApiProblem) -> ApiError:
        status = problem.status or self._style.status_for(problem.kind)
        return _refused(self.side, entity_set, status, f"GET {entity_set}: ", problem.message)

    def _id_filter(self, entity_set: str, ids: Sequence[str]) -> Expr | None:
        """The filter the connector would send for ``ids`` (one request's worth)."""
        try:
            key = self.store.table(entity_set).spec.entity.key
        except ApiProblem:
            return None
        return id_filter(key, ids)

    def _table(self, entity_set: str, expr: Expr | None) -> Table:
        """The table, with ``expr`` checked as the emulator checks ``$filter``: its
        text within the grammar's length, its properties the table's."""
        try:
            table = self.store.table(entity_set)
            if expr is not None:
                if len(to_odata(expr)) > MAX_LENGTH:
                    raise ApiProblem(
                        Kind.BAD_QUERY,
                        f"Syntax error in $filter at position {MAX_LENGTH}: "
                        f"filter longer than {MAX_LENGTH} characters.",
                    )
                compile_filter(expr, table.spec, Params())
        except ApiProblem as problem:
            raise self._read_error(entity_set, problem) from None
        return table

    async def _pages(
        self,
        method: str,
        entity_set: str,
        expr: Expr | None,
        since: datetime | None = None,
    ) -> AsyncIterator[tuple[Table, list[Stored]]]:
        """Keyset pages as the emulator serves them: each page is read when it is asked
        for, strictly after the last row of the page before, in (stamp, id) order when
        ``since`` is given, else in id order."""
        after: tuple[datetime, str] | None = None
        first = True
        while True:
            await self._call(method, entity_set, expr if first else None)
            table = self._table(entity_set, expr if first else None)
            first = False
            ignore_case = table.spec.case_insensitive
            ordered = sorted(
                ((r.stamp if since is not None else _NO_STAMP, key), r)
                for key, r in table.rows.items()
                if (since is None or r.stamp >= since)
                and evaluate(expr, r.values, ignore_case=ignore_case)
            )
            if after is not None:
                ordered = [item for item in ordered if item[0] > after]
            page = ordered[: self.page_size]
            self.stats.rows_read += len(page)
            if page:
                after = page[-1][0]
                yield table, [r for _, r in page]
            if len(ordered) <= self.page_size:
                return

    async def changed_since(
        self, entity_set: str, since: datetime, *, filter: Expr | None = None
    ) -> AsyncIterator[list[Row]]:
        moment = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        async for table, page in self._pages("changed_since", entity_set, filter, moment):
            yield [self.store.row(table, r) for r in page]

    async def read_all(
        self, entity_set: str, *, filter: Expr | None = None
    ) -> AsyncIterator[list[Row]]:
        async for table, page in self._pages("read_all", entity_set, filter):
            yield [self.store.row(table, r) for r in page]

    async def read_ids(self, entity_set: str) -> AsyncIterator[list[str]]:
        async for table, page in self._pages("read_ids", entity_set, None):
            key = table.spec.entity.key
            yield [str(r.values[key]) for r in page]

    async def read_versions(self, entity_set: str) -> AsyncIterator[list[Row]]:
        async for table, page in self._pages("read_versions", entity_set, None):
            entity = table.spec.entity
            kept = (entity.key, entity.modified_field)
            yield [
                Row(r.id, r.modified_at, r.etag, {k: r.fields.get(k) for k in kept})
                for r in (self.store.row(table, s) for s in page)
            ]

    # ------------------------------------------------------------ change tracking

    def _tracks(self, entity_set: str) -> bool:
        return self.side == "dataverse" and entity_set not in self.untracked

    def expire_delta_links(self) -> None:
        """Every delta link handed out so far is answered as expired from now on."""
        self._expired_upto = self._links_issued

    def _link(self, entity_set: str, seq: int) -> str:
        self._links_issued += 1
        issued = self.store.clock.now().astimezone(UTC).isoformat()
        token = f"{seq}!{self._links_issued}!{issued}"
        return f"{entity_set}?$deltatoken={quote(token)}"

    def _since(self, entity_set: str, link: str) -> int:
        """The change number a link starts after; ``DeltaLinkExpired`` as the emulator
        answers ``ExpiredVersionStamp``, ``ChangeTrackingUnavailable`` for a table without."""
        what = f"GET {entity_set}"
        if not self._tracks(entity_set):
            raise ChangeTrackingUnavailable(
                f"{what}: 400 Entity {entity_set} isn't enabled for change tracking.",
                side=self.side,
                status=400,
            )
        expired = DeltaLinkExpired(f"{what}: 400 {EXPIRED_MESSAGE}", side=self.side, status=400)
        try:
            [token] = parse_qs(urlsplit(link).query)["$deltatoken"]
            seq, serial, issued = token.split("!", 2)
            moment = datetime.fromisoformat(issued)
            since, number = int(seq), int(serial)
        except (KeyError, ValueError):
            raise expired from None
        if (
            number <= self._expired_upto
            or number > self._links_issued
            or since > self.store.change_seq
            or moment < self.store.clock.now() - self.change_retention
        ):
            raise expired
        return since

    async def track_changes(
        self, entity_set: str, delta_link: str | None = None
    ) -> AsyncIterator[Changes]:
        if self.side == "bc":
            raise ChangeTrackingUnavailable(f"{entity_set} does not track changes", side="bc")
        if delta_link is None:
            async for changes in self._every_row(entity_set):
                yield changes
            return
        after: tuple[bool, int] | None = None
        since = upto = 0
        first = True
        while True:
            await self._call("track_changes", entity_set)
            table = self._table(entity_set, None)
            if first:
                since, upto, first = (
                    self._since(entity_set, delta_link),
                    self.store.change_seq,
                    False,
                )
            entries = sorted(
                (deleted, seq, key)
                for (name, key), (seq, deleted) in self.store.changes.items()
                if name == entity_set and since < seq <= upto
            )
            if after is not None:
                entries = [e for e in entries if (e[0], e[1]) > after]
            page = entries[: self.page_size]
            rows: list[Row] = []
            deleted: list[str] = []
            for gone, _, key in page:
                stored = table.rows.get(key)
                if gone or stored is None:
                    deleted.append(key)
                else:
                    rows.append(self.store.row(table, stored))
            self.stats.rows_read += len(page)
            last = len(entries) <= self.page_size
            if page:
                after = (page[-1][0], page[-1][1])
            yield Changes(rows, deleted, self._link(entity_set, upto) if last else None)
            if last:
                return

    async def _every_row(self, entity_set: str) -> AsyncIterator[Changes]:
        """The first read of a track: every row in id order; the link on the last page
        starts at the change number of the first page."""
        upto: int | None = None
        after: str | None = None
        while True:
            await self._call("track_changes", entity_set)
            table = self._table(entity_set, None)
            if not self._tracks(entity_set):
                raise ChangeTrackingUnavailable(
                    f"GET {entity_set}: {entity_set} does not track changes "
                    f"({TRACK_CHANGES} not applied)",
                    side=self.side,
                )
            if upto is None:
                upto = self.store.change_seq
            keys = sorted(k for k in table.rows if after is None or k > after)
            page = keys[: self.page_size]
            self.stats.rows_read += len(page)
            last = len(keys) <= self.page_size
            if page:
                after = page[-1]
            rows = [self.store.row(table, table.rows[k]) for k in page]
            yield Changes(rows, [], self._link(entity_set, upto) if last else None)
            if last:
                return

    async def get_many(self, entity_set: str, ids: Sequence[str]) -> dict[str, Row]:
        wanted = as_guids(ids)
        if not wanted:
            return {}
        asked = self._id_filter(entity_set, wanted) if self.faults.read_refusals else None
        await self._call("get_many", entity_set, asked)
        table = self._table(entity_set, None)
        found = {}
        for record_id in wanted:
            stored = table.rows.get(record_id)
            if stored is not None:
                found[record_id] = self.store.row(table, stored)
        self.stats.rows_read += len(found)
        return found

    async def find(self, entity_set: str, filter: Expr, *, top: int | None = None) -> list[Row]:
        if top is not None and top <= 0:
            return []
        if top is None:
            return [
                self.store.row(table, r)
                async for table, page in self._pages("find", entity_set, filter)
                for r in page
            ]
        await self._call("find", entity_set, filter)
        table = self._table(entity_set, filter)
        ignore_case = table.spec.case_insensitive
        matched = sorted(
            (key, r)
            for key, r in table.rows.items()
            if evaluate(filter, r.values, ignore_case=ignore_case)
        )[:top]
        self.stats.rows_read += len(matched)
        return [self.store.row(table, r) for _, r in matched]

    # ------------------------------------------------------------ writes

    async def write(self, entity_set: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        if not ops:
            return []
        outage = await self._call("write", entity_set)
        applying = len(ops)
        if outage is not None:
            if outage.applied is False:
                raise self._unavailable("write", entity_set, outage, applied=False)
            applying = len(ops) if outage.applied is True else min(len(ops), outage.applied)
        results = []
        for op in ops[:applying]:
            refused = self.faults.refusal(entity_set, op) if self.faults.active else None
            results.append(refused or self._perform(entity_set, op, None))
        await self._pause(f"{self.side}.write {entity_set} applied")
        if outage is not None:
            raise self._unavailable("write", entity_set, outage, applied=True)
        written = sum(isinstance(r, Written) for r in results)
        self.stats.records_written += written
        self.stats.records_refused += len(results) - written
        return results

    def _perform(self, entity_set: str, op: WriteOp, caller: str | None) -> WriteResult:
        writes = self._writes
        try:
            if isinstance(op, Create):
                stored = writes.create(
                    entity_set, op.values, op.record_id, caller, only_new=op.only_new
                )
            elif isinstance(op, Update):
                stored = writes.update(entity_set, op.record_id, op.values, op.etag, caller)
            else:
                writes.delete(entity_set, op.record_id, op.etag)
                return Written(None)
        except ApiProblem as problem:
            return self._refused(entity_set, op, problem)
        return Written(self.store.row(self.store.tables[entity_set], stored))

    def _refused(self, entity_set: str, op: WriteOp, problem: ApiProblem) -> WriteResult:
        """The result the connector makes of the emulator's error response."""
        status = problem.status or self._style.status_for(problem.kind)
        body = {
            "error": {"code": self._style.codes.get(problem.kind, ""), "message": problem.message}
        }
        spec = default_spec(self.side, entity_set)
        result = classify(op, status, body, b"", spec, self._stale_codes)
        # A transient status outlasting the retries: the connector's own Rejected.
        return result if result is not None else Rejected(status, problem.message)

    async def aclose(self) -> None:
        return None

    # ------------------------------------------------------------ users and inspection

    @contextmanager
    def _stamped(self, stamp: datetime | None) -> Iterator[None]:
        self.store.stamp_override = stamp
        try:
            yield
        finally:
            self.store.stamp_override = None

    def _by_user(
        self, entity_set: str, op: WriteOp, as_user: str | None, stamp: datetime | None = None
    ) -> Row | None:
        with self._stamped(stamp):
            result = self._perform(entity_set, op, as_user)
        if isinstance(result, Written):
            return result.row
        if isinstance(result, Rejected):
            status = result.status
        elif isinstance(result, Missing):
            status = 404
        else:
            status = self._style.status_for(Kind.STALE)
        raise RecordRejected(result.message, side=self.side, status=status, record_id=op.record_id)

    def user_create(
        self,
        entity_set: str,
        values: dict[str, WriteValue],
        *,
        as_user: str | None = None,
        stamped: datetime | None = None,
    ) -> Row:
        """A user creates a record (Dataverse: as ``as_user``, a ``systemuserid``; by
        default the integration user, as the fault suite's users do). ``stamped``: the
        record is stamped then, by a transaction that commits only now (a late commit)."""
        row = self._by_user(entity_set, Create(dict(values)), as_user, stamped)
        assert row is not None
        return row

    def user_update(
        self,
        entity_set: str,
        record_id: str,
        values: dict[str, WriteValue],
        *,
        as_user: str | None = None,
        stamped: datetime | None = None,
    ) -> Row:
        """A user changes a record, whatever its version (``If-Match: *``); ``stamped``
        as for ``user_create``."""
        row = self._by_user(entity_set, Update(record_id, dict(values)), as_user, stamped)
        assert row is not None
        return row

    def user_delete(self, entity_set: str, record_id: str) -> None:
        """A user deletes a record, whatever its version."""
        self._by_user(entity_set, Delete(record_id), None)

    def load(self, entity_set: str, rows: Iterable[Row]) -> None:
        """Takes rows as another implementation of the side returned them (the
        dry run works on such a copy): ids, values, stamps and ETags are kept,
        and a later write gets a version newer than any of theirs."""
        table = self.store.table(entity_set)
        for row in rows:
            version = _version_of(self.side, row.etag)
            if version is None:
                version, etag = self.store.next_version()
            else:
                etag = row.etag or ""
                self.store.version = max(self.store.version, version)
            stamp = row.modified_at or self.store.now()
            table.rows[row.id.lower()] = Stored(dict(row.fields), stamp, version, etag)
            self.store.note_change(entity_set, row.id.lower())
        if isinstance(self._writes, BcWrites):
            self._writes.continue_series(entity_set)

    def rows(self, entity_set: str) -> list[Row]:
        """Every row of ``entity_set`` by id, as a read would return it."""
        table = self.store.table(entity_set)
        return [self.store.row(table, table.rows[i]) for i in sorted(table.rows)]

    def row(self, entity_set: str, record_id: str) -> Row | None:
        table = self.store.table(entity_set)
        stored = table.rows.get(record_id.lower())
        return None if stored is None else self.store.row(table, stored)


def _version_of(side: Side, etag: str | None) -> int | None:
    """The row version an ETag of ``side`` carries, when it has the shape the
    emulators give (real BC ETags are opaque: a fresh version stands in)."""
    if not etag:
        return None
    # A read returns the header form, W/"<tag>"; the version is in the bare tag
    # (what ``parse_precondition`` hands the emulators' own version checks).
    tag = etag.removeprefix("W/").strip('"')
    if side == "bc":
        return bc_version_of(tag)
    return int(tag) if tag.isdigit() else None


def _refused(side: Side, entity_set: str, status: int, what: str, message: str) -> ReadRefused:
    """A refused read as the connector raises it: 401/403 are the credentials'."""
    kind = ReadUnauthorized if status in (401, 403) else ReadRefused
    return kind(f"{what}{status} {message}", side=side, status=status, entity_set=entity_set)
