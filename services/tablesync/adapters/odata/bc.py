"""The Business Central API v2.0 connector.

Every collection lives under a company: ``companies(<id>)/<set>``, or a custom API's
route such as ``/BC/api/<publisher>/<group>/<version>/companies(<id>)/<set>``. The
company is looked up once in what ``GET companies`` lists: by ``company_id``, else by
``company_name``, else the first one. A connector works in one company; ``in_company``
gives one for another company over the same HTTP client, so that the companies of an
environment share its users and their limits as they do in BC.

Writes go through the JSON ``$batch`` of the route's API (``POST <api>/$batch`` with
``{"requests": [...]}``, 100 requests at most per batch, BC's limit). Without the
``Isolation: snapshot`` header each request commits on its own, so one refused record
leaves the others written.

- ``Create`` → ``POST <set>``; BC assigns the id (a ``record_id`` is refused).
- ``Update`` → ``PATCH <set>(<id>)`` with ``If-Match: <etag>``, ``*`` when none is known
  (BC requires the header).
- ``Delete`` → ``DELETE <set>(<id>)`` with ``If-Match`` likewise.

BC answers an ``If-Match`` naming an older version with 409 ``Request_EntityChanged``;
that is ``Stale`` here, as 412 is on Dataverse.

Per record: 404 → ``Missing``, another 4xx → ``Rejected`` with the API's message; 429
and 5xx → sent again in a later batch, ``Rejected`` once the retry budget is spent. A
batch refused as a whole (a 4xx to the ``$batch`` request itself) makes every record in
it ``Rejected``; a batch of creates that failed in a way that may have applied it
raises ``ApiUnavailable`` rather than risk creating twice (see ``http``).

The forms follow the API v2.0 reference ("Create/Update/Delete customers" …) and "Using
OData transactional $batch requests".
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from tablesync.adapters.odata.base import ODataSide, classify
from tablesync.adapters.odata.batch import (
    BatchRequest,
    BatchResponse,
    decode_json_batch,
    encode_json_batch,
)
from tablesync.adapters.odata.entities import EntitySpec, SpecSource, catalog_specs
from tablesync.adapters.odata.http import ODataHttp, error_message
from tablesync.adapters.odata.metadata import MetadataCache, bc_root, read_bc_route
from tablesync.adapters.odata.retry import RetryPolicy, retry_after_s
from tablesync.core import catalog
from tablesync.core.events import Side
from tablesync.core.metadata import TableInfo
from tablesync.core.records import (
    Create,
    Ref,
    Rejected,
    Update,
    WriteOp,
    WriteResult,
    WriteValue,
)
from tablesync.errors import ApiError
from tablesync.settings import ApiSettings

__all__ = ["ASSIGNED_IDS_MESSAGE", "STALE_CODES", "BcApi", "BcCompany"]

MAX_BATCH = 100
# BC's answer to an If-Match that names an older version: 409, not 412 (the "Error
# Codes" page of the OData/API troubleshooting docs).
STALE_CODES = frozenset({"Request_EntityChanged"})
ASSIGNED_IDS_MESSAGE = "Business Central assigns record ids: create without record_id"
_COMPANY = "{company}"
# The custom API pages tablesync's built-in catalog reads from (salespeople).
_CUSTOM_ROUTES = tuple(
    dict.fromkeys(e.api_route.strip("/") for e in catalog.entities("bc") if e.api_route)
)


@dataclass(frozen=True, slots=True)
class BcCompany:
    """One company of the environment, as ``GET companies`` lists it."""

    id: str
    """Lower-cased, as the connector sends it."""
    name: str
    display_name: str

    def named_by(self, ref: str) -> bool:
        """Whether ``ref`` (an id, any case, or a name) means this company."""
        return ref.lower() == self.id or ref in (self.name, self.display_name)


class BcApi(ODataSide):
    """``SideApi`` over Business Central API v2.0 (and custom APIs of the same shape)."""

    side: Side = "bc"
    max_page_size = 20000

    def __init__(
        self,
        settings: ApiSettings,
        *,
        specs: SpecSource | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http: ODataHttp | None = None,
        company_id: str | None = None,
        company: str | None = None,
    ) -> None:
        """``company`` is the company to work in, by id or name; without it (and
        without ``company_id``, the id already known) the one of ``settings``."""
        self._owns_http = http is None
        client = http or ODataHttp("bc", settings, transport=transport)
        super().__init__(client, settings, specs or catalog_specs("bc", client.base_url.path))
        self._company_ref = company
        self._company_name = settings.company_name
        self._wanted_company_id = settings.company_id.lower() if settings.company_id else None
        self._company_id = company_id.lower() if company_id else None
        self._company_lock = asyncio.Lock()
        self._policy = RetryPolicy.from_settings(settings)
        self._batch_size = max(1, min(settings.batch_size, MAX_BATCH))
        base_path = client.base_url.path
        self._root = bc_root(base_path)
        self._route = base_path.rstrip("/")[len(self._root) + len("/api/") :] or "v2.0"
        self._metadata = MetadataCache()

    async def company_id(self) -> str:
        """The id of the company this connector works in, looked up on first use."""
        if self._company_id is not None:
            return self._company_id
        async with self._company_lock:
            if self._company_id is None:
                self._company_id = await self._find_company()
            return self._company_id

    def in_company(self, company: str) -> BcApi:
        """A connector on the same HTTP client and specs working in ``company`` (an id
        or a name), looked up on its first use; closing it leaves the client open."""
        return BcApi(self._settings, specs=self._specs, http=self._http, company=company)

    async def aclose(self) -> None:
        if self._owns_http:
            await super().aclose()

    async def companies(self) -> list[BcCompany]:
        """The companies of the environment, in the order ``GET companies`` lists them."""
        reply = await self._http.send("GET", "companies")
        if reply.status >= 400:
            raise ApiError(
                f"GET companies: {reply.status} {error_message(reply.data, reply.content)}",
                side=self.side,
                status=reply.status,
            )
        values = reply.data.get("value") if isinstance(reply.data, dict) else None
        return [
            BcCompany(
                str(c["id"]).lower(), str(c.get("name") or ""), str(c.get("displayName") or "")
            )
            for c in values or []
            if isinstance(c, dict) and c.get("id")
        ]

    async def _find_company(self) -> str:
        companies = await self.companies()
        if self._company_ref is not None:
            ref = self._company_ref
            companies = [c for c in companies if c.named_by(ref)]
            which = f"with id or name {ref!r} (TABLESYNC_BC__COMPANIES)"
        elif self._wanted_company_id is not None:
            wanted_id = self._wanted_company_id
            companies = [c for c in companies if c.id == wanted_id]
            which = f"with id {wanted_id} (TABLESYNC_BC__COMPANY_ID)"
        elif self._company_name is not None:
            wanted = self._company_name
            companies = [c for c in companies if wanted in (c.name, c.display_name)]
            which = f"named {wanted!r} (TABLESYNC_BC__COMPANY_NAME)"
        else:
            which = "at all"
        if not companies:
            raise ApiError(f"no company {which}", side=self.side)
        company = companies[0]
        structlog.get_logger().info(
            "odata.company", side=self.side, company_id=company.id, name=company.name
        )
        return company.id

    async def describe(
        self,
        entity_set: str | None = None,
        *,
        routes: Sequence[str] = (),
        refresh: bool = False,
    ) -> list[TableInfo]:
        """The entity sets of the standard API route, of the custom API routes the catalog
        names and of ``routes`` (``publisher/group/version``), or those whose entity set
        or entity type is ``entity_set``; each route's ``$metadata`` read once, again with
        ``refresh``. A catalog route the environment does not serve (its extension not
        installed, 404) has no sets; a route named in ``routes`` must answer."""
        found: list[TableInfo] = []
        named = set(routes)
        for route in dict.fromkeys((self._route, *_CUSTOM_ROUTES, *routes)):
            custom = route != self._route
            optional = custom and route not in named

            async def load(
                route: str = route, custom: bool = custom, optional: bool = optional
            ) -> list[TableInfo]:
                try:
                    return await read_bc_route(self._http, self._root, route, custom=custom)
                except ApiError as exc:
                    if optional and exc.status == 404:
                        return []
                    raise

            tables = await self._metadata.get(route, load, refresh=refresh)
            if entity_set is None:
                found.extend(tables)
            else:
                found.extend(t for t in tables if entity_set in (t.entity_set, t.name))
        return found

    async def _probe_path(self) -> str:
        # The company synced: it must still be there.
        return f"companies({await self.company_id()})"

    async def collection(self, spec: EntitySpec) -> str:
        if _COMPANY not in spec.route:
            return spec.route
        return spec.route.replace(_COMPANY, await self.company_id())

    async def write(self, entity_set: str, ops: Sequence[WriteOp]) -> list[WriteResult]:
        spec = self.spec(entity_set)
        collection = await self.collection(spec)
        root, relative = _split_route(collection)
        results: list[WriteResult | None] = [None] * len(ops)
        sendable: list[int] = []
        for i, op in enumerate(ops):
            if isinstance(op, Create) and op.record_id is not None:
                results[i] = Rejected(400, ASSIGNED_IDS_MESSAGE)
            else:
                sendable.append(i)
        chunks = [
            sendable[start : start + self._batch_size]
            for start in range(0, len(sendable), self._batch_size)
        ]
        await self.gather_all(
            self._write_batch(spec, root, relative, ops, c, results) for c in chunks
        )
        final = [r if r is not None else Rejected(0, "no response") for r in results]
        await self._fill_rows(entity_set, ops, final, {})
        self._count(entity_set, final)
        return final

    async def _write_batch(
        self,
        spec: EntitySpec,
        root: str,
        relative: str,
        ops: Sequence[WriteOp],
        pending: list[int],
        results: list[WriteResult | None],
    ) -> None:
        retries = 0
        while pending:
            requests = [_request(relative, ops[i]) for i in pending]
            reply = await self._http.send(
                "POST",
                f"{root}/$batch" if root else "$batch",
                headers={"Content-Type": "application/json"},
                content=encode_json_batch(requests),
                idempotent=all(not isinstance(ops[i], Create) for i in pending),
            )
            if reply.status >= 400:
                message = error_message(reply.data, reply.content)
                for i in pending:
                    results[i] = Rejected(reply.status, message)
                return
            responses = decode_json_batch(reply.data, len(pending))
            transient: list[int] = []
            wait: float | None = None
            for i, response in zip(pending, responses, strict=True):
                result = classify(
                    ops[i], response.status, response.data, response.raw, spec, STALE_CODES
                )
                if result is None:
                    transient.append(i)
                    results[i] = Rejected(response.status, error_message(response.data))
                    wait = self._note_transient(response, wait, reply.user)
                else:
                    results[i] = result
            if not transient or retries >= self._policy.max_retries:
                return
            retries += 1
            self.stats.retries += 1
            await self._http.pause(
                wait if wait is not None else self._policy.backoff_s(retries - 1)
            )
            pending = transient

    def _note_transient(
        self, response: BatchResponse, wait: float | None, user: int
    ) -> float | None:
        if response.status == 429:
            self.stats.throttled += 1
        after = retry_after_s(response.headers.get("retry-after"))
        if after is None:
            return wait
        self._http.hold_back(after, user)
        return max(wait or 0.0, after)


def _split_route(collection: str) -> tuple[str, str]:
    """(API root, collection path relative to it): a JSON batch goes to ``<root>/$batch``
    and names its requests relative to that root."""
    marker = collection.find("companies(")
    if marker > 0:
        return collection[:marker].rstrip("/"), collection[marker:]
    if marker == 0:
        return "", collection
    head, _, tail = collection.rpartition("/")
    return head, tail


def _request(relative: str, op: WriteOp) -> BatchRequest:
    json_type = {"Content-Type": "application/json"}
    if isinstance(op, Create):
        return BatchRequest("POST", relative, json_type, _payload(op.values))
    target = f"{relative}({op.record_id.lower()})"
    if isinstance(op, Update):
        return BatchRequest(
            "PATCH", target, {**json_type, "If-Match": op.etag or "*"}, _payload(op.values)
        )
    return BatchRequest("DELETE", target, {"If-Match": op.etag or "*"})


def _payload(values: dict[str, WriteValue]) -> dict[str, Any]:
    # BC relates records by id or code fields; a Ref can only mean the target's id.
    return {name: value.id if isinstance(value, Ref) else value for name, value in values.items()}
