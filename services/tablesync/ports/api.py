"""What the sync engine needs from one side's HTTP API (BC or Dataverse)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Protocol

from tablesync.core.events import Side
from tablesync.core.filters import Expr
from tablesync.core.records import Changes, Row, WriteOp, WriteResult

__all__ = ["SideApi"]


class SideApi(Protocol):
    """One side's API, by entity set name (``customers``, ``accounts`` …).

    Contract: rows come back with their API field names (Dataverse lookups as
    ``_x_value``); ids are lower-case GUID strings; ``modified_at`` is the
    side's own stamp (BC ``lastModifiedDateTime``, Dataverse ``modifiedon``).
    Throttling (429) and transient failures (5xx, connection errors) are
    retried inside the adapter; ``ApiUnavailable`` is raised only when the
    retry budget is spent, ``ApiAuthError`` when credentials are refused.
    A read the side refuses raises ``ReadRefused`` with the entity set, its
    status and the side's reason: for the query (a 4xx other than 401/403:
    too long, an unknown property), or, as ``ReadUnauthorized`` (an
    ``ApiAuthError`` too), for the credentials or a permission.
    A refusal of one record never raises: it is that record's ``Rejected``.
    """

    side: Side

    def changed_since(
        self, entity_set: str, since: datetime, *, filter: Expr | None = None
    ) -> AsyncIterator[list[Row]]:
        """Pages of rows with stamp >= ``since``, ordered by (stamp, id)."""
        ...

    def read_all(self, entity_set: str, *, filter: Expr | None = None) -> AsyncIterator[list[Row]]:
        """Pages of every row matching ``filter``, ordered by id."""
        ...

    def read_ids(self, entity_set: str) -> AsyncIterator[list[str]]:
        """Pages of the ids of every row (cheap: selects the key only)."""
        ...

    def read_versions(self, entity_set: str) -> AsyncIterator[list[Row]]:
        """Pages of every row, ordered by id, with its ETag and stamp and only its key
        and stamp among ``fields`` (cheap: what a reconcile compares)."""
        ...

    def track_changes(
        self, entity_set: str, delta_link: str | None = None
    ) -> AsyncIterator[Changes]:
        """The side's own change tracking (Dataverse's delta links).

        Without ``delta_link``: every row, the last page carrying the link of the changes
        committed from this read's start on. With one: the rows created or changed and the
        ids of rows deleted since the read that gave it, whatever their stamps say (a
        change committed late is there), the last page carrying the next link.
        ``ChangeTrackingUnavailable`` (on the first page) when the table does not track
        changes, as no BC table does; ``DeltaLinkExpired`` when the link is too old or
        not one the side gave: read again without one."""
        ...

    async def get_many(self, entity_set: str, ids: Sequence[str]) -> dict[str, Row]:
        """The rows with these ids that exist, by id."""
        ...

    async def find(self, entity_set: str, filter: Expr, *, top: int | None = None) -> list[Row]:
        """Rows matching ``filter`` (all pages, or at most ``top``)."""
        ...

    async def write(self, entity_set: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Performs each op; one result per op, in order. Independent ops:
        one refused record does not undo or stop the others."""
        ...

    async def aclose(self) -> None: ...
