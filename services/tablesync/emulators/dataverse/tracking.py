"""Dataverse change tracking, served from the emulator's change log.

Follows "Use change tracking to synchronize data with external systems" (Web API):

- ``GET <set>`` with ``Prefer: odata.track-changes``, on a table whose
  ``ChangeTrackingEnabled`` is true, answers with every row (``$select`` applies),
  ``Preference-Applied: odata.track-changes``, and on its last page an
  ``@odata.deltaLink``: the request's URL with ``$deltatoken=<token>``. On a table
  without change tracking the preference is not applied: a plain read.
- Following the delta link answers with the rows created or changed since its token was
  issued, as they are now, then one entry per row deleted since
  (``{"@odata.context": "<root>/$metadata#<set>/$deletedEntity", "id": <guid>,
  "reason": "deleted"}``; also for a row created after the token and deleted again),
  each part in change order, under an ``@odata.context`` ending in ``/$delta``; its last
  page carries the next delta link. ``Prefer: odata.maxpagesize`` pages both reads with
  ``@odata.nextLink``.
- ``<set>/$count?$deltatoken=<token>`` is the number of changes since the token.
- ``$filter``, ``$orderby``, ``$expand`` and ``$top`` are refused with change tracking.
- A token older than the organization's retention (``ExpireChangeTrackingInDays``,
  7 days by default), or one the service cannot read, is refused with
  ``ExpiredVersionStamp`` (0x80044352): the client reads the table again without one.
  A delta token on a table without change tracking is ``ChangeTrackingNotEnabledForEntity``.

A token is ``<change number>!<issued, UTC>``, as Dataverse's are ``<version>!<date time>``.
Change numbers follow the order transactions commit in (``schema._tracking_ddl``), so a
change committed after a read was served has a number above that read's token, however
long before its stamp says it was made: change tracking misses no late commit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.prefer import max_page_size, parse_prefer
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.query import parse_options, read_page, select_list
from tablesync.emulators.common.runtime import Tuning
from tablesync.emulators.common.schema import CHANGES_TABLE
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident
from tablesync.emulators.dataverse import reads

__all__ = [
    "EXPIRED_MESSAGE",
    "TRACK_CHANGES",
    "DeltaToken",
    "changes",
    "count_changes",
    "initial",
    "is_tracked",
    "is_tracking_request",
    "not_tracked_message",
    "refused_option",
]

TRACK_CHANGES = "odata.track-changes"
EXPIRED_MESSAGE = (
    "Version stamp associated with the client has expired. Please perform a full sync."
)
_REFUSED = ("$filter", "$orderby", "$expand", "$top")
_TIME_FORMAT = "%m/%d/%Y %H:%M:%S.%f"
_SEPARATOR = "!"
_ID = "@id"
_DELETED = "@deleted"
_SEQ = "@seq"


@dataclass(frozen=True, slots=True)
class DeltaToken:
    """Where a delta link starts: the last change number a read was given, and when."""

    seq: int
    issued: datetime

    def encode(self) -> str:
        return f"{self.seq}{_SEPARATOR}{self.issued.astimezone(UTC).strftime(_TIME_FORMAT)}"

    @classmethod
    def decode(cls, text: str) -> DeltaToken:
        seq, separator, moment = text.partition(_SEPARATOR)
        if not separator or not seq.isdigit():
            raise ApiProblem(Kind.EXPIRED_TOKEN, EXPIRED_MESSAGE)
        try:
            issued = datetime.strptime(moment, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise ApiProblem(Kind.EXPIRED_TOKEN, EXPIRED_MESSAGE) from None
        return cls(int(seq), issued)

    def expired(self, now: datetime, retention_s: float, expired_before: datetime | None) -> bool:
        """Whether a token is past the retention, or issued before tokens were expired."""
        if self.issued < now - timedelta(seconds=retention_s):
            return True
        return expired_before is not None and self.issued <= expired_before


def is_tracked(spec: TableSpec, tuning: Tuning) -> bool:
    """The table's ``ChangeTrackingEnabled``."""
    return spec.change_log and spec.entity.entity_set not in tuning.untracked


def is_tracking_request(request: ApiRequest) -> bool:
    """A first read asking for a delta link, or a next page of one."""
    if TRACK_CHANGES in parse_prefer(request.header("prefer")):
        return True
    return _SEPARATOR in request.query.get("$skiptoken", "")


def not_tracked_message(spec: TableSpec) -> str:
    return f"Entity {spec.entity.logical_name} isn't enabled for change tracking."


def refused_option(request: ApiRequest) -> None:
    for name in _REFUSED:
        if name in request.query:
            raise ApiProblem(
                Kind.BAD_QUERY,
                f'The "{name}" query parameter isn\'t supported when Change Tracking is enabled.',
            )


def _page_size(request: ApiRequest, tuning: Tuning) -> tuple[int, int | None]:
    requested = max_page_size(parse_prefer(request.header("prefer")))
    limit = min(reads.MAX_PAGE_SIZE, tuning.max_page_size)
    return min(requested or limit, limit), requested


def _link(request: ApiRequest, **options: str) -> str:
    """The request's own URL with its paging and delta options replaced by ``options``."""
    kept = {k: v for k, v in request.query.items() if k not in ("$skiptoken", "$deltatoken")}
    kept.update({f"${name}": value for name, value in options.items()})
    query = urlencode(kept, quote_via=quote, safe="$,'()")
    return f"{request.service_root}/{request.path}?{query}"


def _applied(requested: int | None, *extra: str) -> dict[str, str]:
    applied = [*extra]
    if requested is not None:
        applied.append(f"odata.maxpagesize={requested}")
    return {"Preference-Applied": ", ".join(applied)} if applied else {}


async def _last_change(db: Executor) -> int:
    value: int = await db.fetchval(f"SELECT coalesce(max(seq), 0) FROM {CHANGES_TABLE}")
    return value


def _fields(spec: TableSpec, request: ApiRequest) -> tuple[Any, ...]:
    query = {k: v for k, v in request.query.items() if k not in ("$skiptoken", "$deltatoken")}
    options = parse_options(spec, query)
    return options.select or tuple(spec.entity.fields.values())


async def initial(
    request: ApiRequest, db: Executor, spec: TableSpec, tuning: Tuning
) -> ApiResponse:
    """Every row, paged in id order; the delta link on the last page starts at the change
    number taken before the first page was read, so nothing changed meanwhile is lost."""
    refused_option(request)
    query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
    options = parse_options(spec, query)
    fields = options.select or tuple(spec.entity.fields.values())
    skip = request.query.get("$skiptoken")
    if skip is None:
        token = DeltaToken(await _last_change(db), datetime.now(UTC))
        keyset = None
    else:
        seq, _, rest = skip.partition(_SEPARATOR)
        moment, _, keyset = rest.partition(_SEPARATOR)
        token = DeltaToken.decode(f"{seq}{_SEPARATOR}{moment}")
    size, requested = _page_size(request, tuning)
    page = await read_page(db, spec, replace(options, skiptoken=keyset), fields, size)
    body: dict[str, object] = {
        "@odata.context": reads.context_url(request, spec, False),
        "value": [reads.shape(spec, r, fields, False) for r in page.rows],
    }
    if page.next_token is not None:
        body["@odata.nextLink"] = _link(
            request, skiptoken=f"{token.encode()}{_SEPARATOR}{page.next_token}"
        )
    else:
        body["@odata.deltaLink"] = _link(request, deltatoken=token.encode())
    return ApiResponse.json(200, body, _applied(requested, TRACK_CHANGES))


def _since(request: ApiRequest, spec: TableSpec, tuning: Tuning) -> DeltaToken:
    if not is_tracked(spec, tuning):
        raise ApiProblem(Kind.NOT_TRACKED, not_tracked_message(spec))
    refused_option(request)
    since = DeltaToken.decode(request.query["$deltatoken"])
    if since.expired(datetime.now(UTC), tuning.change_retention_s, tuning.expired_before):
        raise ApiProblem(Kind.EXPIRED_TOKEN, EXPIRED_MESSAGE)
    return since


async def changes(
    request: ApiRequest, db: Executor, spec: TableSpec, tuning: Tuning
) -> ApiResponse:
    """The changes since the request's ``$deltatoken``, up to the last change committed
    when the first page was asked for (a later one waits for the next delta link)."""
    since = _since(request, spec, tuning)
    fields = _fields(spec, request)
    skip = request.query.get("$skiptoken")
    if skip is None:
        upto = DeltaToken(await _last_change(db), datetime.now(UTC))
        after: tuple[bool, int] = (False, since.seq)
    else:
        parts = skip.split(_SEPARATOR)
        if len(parts) != 4 or parts[2] not in ("0", "1") or not parts[3].isdigit():
            raise ApiProblem(
                Kind.BAD_QUERY,
                "The $skiptoken is not valid for this query; use the @odata.nextLink the "
                "previous page returned, unchanged.",
            )
        upto = DeltaToken.decode(f"{parts[0]}{_SEPARATOR}{parts[1]}")
        after = (parts[2] == "1", int(parts[3]))
    if since.seq > upto.seq:
        # A token from another database: this one never handed out that change number.
        raise ApiProblem(Kind.EXPIRED_TOKEN, EXPIRED_MESSAGE)
    size, requested = _page_size(request, tuning)
    params = Params()
    key = ident(spec.entity.key)
    columns = select_list(spec, fields, qualifier="t.")
    sql = (
        f"SELECT c.record_id::text AS {ident(_ID)}, c.deleted AS {ident(_DELETED)}, "
        f"c.seq AS {ident(_SEQ)}, {columns} "
        f"FROM {CHANGES_TABLE} c LEFT JOIN {spec.table} t ON t.{key} = c.record_id "
        f"WHERE c.entity_set = {params.add(spec.entity.entity_set, 'text')} "
        f"AND c.seq > {params.add(since.seq, 'bigint')} "
        f"AND c.seq <= {params.add(upto.seq, 'bigint')} "
        f"AND (c.deleted, c.seq) > ({params.add(after[0], 'boolean')}, "
        f"{params.add(after[1], 'bigint')}) "
        f"ORDER BY c.deleted, c.seq LIMIT {params.add(size + 1, 'bigint')}"
    )
    found = await db.fetch(sql, *params.values)
    more = len(found) > size
    found = found[:size]
    deleted_context = f"{request.service_root}/$metadata#{spec.entity.entity_set}/$deletedEntity"
    values: list[dict[str, object]] = []
    for record in found:
        if record[_DELETED] or record[spec.entity.key] is None:
            values.append(
                {"@odata.context": deleted_context, "id": record[_ID], "reason": "deleted"}
            )
        else:
            values.append(reads.shape(spec, record, fields, False))
    context = reads.context_url(request, spec, False) + "/$delta"
    body: dict[str, object] = {"@odata.context": context}
    if more:
        last = found[-1]
        body["@odata.nextLink"] = _link(
            request,
            deltatoken=request.query["$deltatoken"],
            skiptoken=_SEPARATOR.join(
                (upto.encode(), "1" if last[_DELETED] else "0", str(last[_SEQ]))
            ),
        )
    else:
        body["@odata.deltaLink"] = _link(request, deltatoken=upto.encode())
    body["value"] = values
    return ApiResponse.json(200, body, _applied(requested))


async def count_changes(
    request: ApiRequest, db: Executor, spec: TableSpec, tuning: Tuning
) -> ApiResponse:
    since = _since(request, spec, tuning)
    count = await db.fetchval(
        f"SELECT count(*) FROM {CHANGES_TABLE} WHERE entity_set = $1 AND seq > $2",
        spec.entity.entity_set,
        since.seq,
    )
    return ApiResponse(200, str(count).encode(), [("content-type", "text/plain")])
