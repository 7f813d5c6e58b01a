"""The Dataverse Web API v9.2 over the emulator's tables.

Routes (relative to ``/api/data/v9.2``):

    GET  <set>                      query (``$filter $select $orderby $top $count``), paged by
                                    ``Prefer: odata.maxpagesize`` (at most 5,000)
    GET  <set>/$count               the count as text
    GET  <set> + Prefer: odata.track-changes, then its @odata.deltaLink (``$deltatoken``)
                                    change tracking: rows changed and ``$deletedEntity``
                                    entries since (``tracking``)
    POST <set>                      create: 204 + ``OData-EntityId``, or 201 + the row with
                                    ``Prefer: return=representation``
    POST <set>/Microsoft.Dynamics.CRM.CreateMultiple | UpdateMultiple | UpsertMultiple
                                    the bulk messages: many rows in one request and one
                                    transaction (``bulk``)
    GET / PATCH / DELETE <set>(<key>)
                                    ``<key>`` is the id or an alternate key; PATCH is an upsert
                                    (``If-Match: *`` forbids the create, ``If-None-Match: *``
                                    the update), ``If-Match: <etag>`` → 412 when stale
    GET / PUT / DELETE <set>(<key>)/<property>
    PUT / DELETE <set>(<key>)/<navigation>/$ref
    GET  WhoAmI                     the caller
    GET  $metadata, EntityDefinitions…, GlobalOptionSetDefinitions…
                                    table and column definitions (``metadata``)
    POST $batch                     multipart/mixed with change sets

The caller is the integration user, or the user ``CallerObjectId`` (Entra object id) or
``MSCRMCallerID`` (systemuserid) names ("Impersonate another user using the Web API");
writes record it in ``_createdby_value`` and ``_modifiedby_value``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import asyncpg

from tablesync.core.catalog import FieldDef
from tablesync.core.events import Side
from tablesync.emulators.common.custom import Customizations
from tablesync.emulators.common.etags import dataverse_etag, parse_precondition
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.payload import json_object
from tablesync.emulators.common.prefer import parse_prefer
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.query import (
    VERSION_ALIAS,
    select_list,
)
from tablesync.emulators.common.runtime import Tuning
from tablesync.emulators.common.schema import meta_get, meta_set
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident
from tablesync.emulators.common.values import convert, parse_guid
from tablesync.emulators.common.writes import (
    INSERTED_ALIAS,
    delete_sql,
    insert_sql,
    update_sql,
    upsert_sql,
)
from tablesync.emulators.dataverse import batch, bulk, metadata, reads, tracking
from tablesync.emulators.dataverse.definitions import definitions
from tablesync.emulators.dataverse.keys import KeyRef, parse_key, parse_reference, split_segment
from tablesync.emulators.dataverse.specs import (
    API_ROOT,
    DATAVERSE_SPECS,
    INTEGRATION_USER_NAME,
    register,
)
from tablesync.emulators.dataverse.style import DATAVERSE_STYLE
from tablesync.emulators.dataverse.writes import (
    DUPLICATE_MESSAGE,
    Body,
    check_body_key,
    key_differs,
    missing_required,
    required_problem,
    split_body,
    with_key,
    without_key,
    write_assigns,
)

__all__ = [
    "DUPLICATE_MESSAGE",
    "IN_USE_MESSAGE",
    "STALE_MESSAGE",
    "DataverseService",
    "required_problem",
]

_KEY_SAFE = "'(),=-_.~:@!$*+;/"
STALE_MESSAGE = "The version of the existing record doesn't match the RowVersion property provided."
IN_USE_MESSAGE = (
    "The object you tried to delete is associated with another object and cannot be deleted."
)


class DataverseService:
    side: Side = "dataverse"
    style = DATAVERSE_STYLE
    roots: tuple[str, ...] = (API_ROOT,)

    def __init__(
        self,
        tuning: Tuning,
        specs: tuple[TableSpec, ...] = DATAVERSE_SPECS,
        custom: Customizations | None = None,
    ) -> None:
        self.tuning = tuning
        self.specs = specs
        register(specs)
        self._by_set = {s.entity.entity_set: s for s in specs}
        self.definitions = definitions(specs, custom or Customizations.none())
        self.integration_user = UUID(int=0)
        self.organization = UUID(int=0)
        self.business_unit = UUID(int=0)

    # ------------------------------------------------------------ lifecycle

    async def _meta_uuid(self, db: Executor, key: str) -> UUID:
        value = await meta_get(db, key)
        if value is None:
            value = str(uuid4())
            await meta_set(db, key, value)
        return UUID(value)

    async def reset(self, db: Executor) -> None:
        """Every table is one of the specs: ``truncate_all`` empties them all."""

    async def prepare(self, db: Executor) -> None:
        self.integration_user = await self._meta_uuid(db, "integration_user")
        self.organization = await self._meta_uuid(db, "organization_id")
        self.business_unit = await self._meta_uuid(db, "business_unit_id")
        first, last = INTEGRATION_USER_NAME
        await db.execute(
            "INSERT INTO systemusers (systemuserid, firstname, lastname, fullname, "
            "internalemailaddress, accessmode, islicensed, isdisabled, "
            '"_createdby_value", "_modifiedby_value") '
            "VALUES ($1, $2, $3, $2 || ' ' || $3, $4, 4, false, false, $1, $1) "
            "ON CONFLICT (systemuserid) DO NOTHING",
            self.integration_user,
            first,
            last,
            "tablesync-integration@cronus.example",
        )

    # ------------------------------------------------------------ routing

    async def handle(self, request: ApiRequest, db: Executor) -> ApiResponse:
        path = request.path.rstrip("/")
        if path == "$batch":
            if request.method != "POST":
                raise ApiProblem(Kind.METHOD_NOT_ALLOWED, "$batch accepts POST only.")
            return await batch.run(self, request, db)
        if path == "":
            return self._service_document(request)
        if metadata.first_segment(path) in metadata.METADATA_SETS:
            return metadata.handle(
                request,
                self.definitions,
                self.tuning,
                lambda: metadata.metadata_document(self.specs),
            )
        if path in ("WhoAmI", "WhoAmI()"):
            return await self._who_am_i(request, db)
        name, key_text, rest = split_segment(path)
        spec = self._by_set.get(name)
        if spec is None:
            raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{name}'.")
        method = request.method
        if key_text is None:
            delta = "$deltatoken" in request.query
            if rest == "$count" and method == "GET":
                if delta:
                    return await tracking.count_changes(request, db, spec, self.tuning)
                return await reads.count(request, db, spec)
            if rest is None and method == "GET":
                if delta:
                    return await tracking.changes(request, db, spec, self.tuning)
                if tracking.is_tracking_request(request) and tracking.is_tracked(spec, self.tuning):
                    return await tracking.initial(request, db, spec, self.tuning)
                return await reads.list_rows(
                    request, db, spec, self.tuning.max_page_size, self.tuning.short_listing
                )
            if rest is None and method == "POST":
                return await self._create(request, db, spec)
            message = bulk.ACTIONS.get(rest or "")
            if message is not None and method == "POST":
                caller = await self._caller(request, db)
                return await bulk.run(request, db, spec, message, caller)
            raise self._not_allowed(request, name)
        key = parse_key(spec, key_text)
        if rest is None:
            if method == "GET":
                return await reads.get_row(request, db, key)
            if method == "PATCH":
                return await self._patch(request, db, key)
            if method == "DELETE":
                return await self._delete(request, db, key)
            raise self._not_allowed(request, name)
        return await self._member(request, db, key, rest)

    @staticmethod
    def _not_allowed(request: ApiRequest, segment: str) -> ApiProblem:
        return ApiProblem(
            Kind.METHOD_NOT_ALLOWED,
            f"The HTTP method '{request.method}' is not allowed on '{segment}'.",
        )

    def _service_document(self, request: ApiRequest) -> ApiResponse:
        names = [s.entity.entity_set for s in self.specs]
        return ApiResponse.json(
            200,
            {
                "@odata.context": f"{request.service_root}/$metadata",
                "value": [{"name": n, "kind": "EntitySet", "url": n} for n in names],
            },
        )

    async def _who_am_i(self, request: ApiRequest, db: Executor) -> ApiResponse:
        caller = await self._caller(request, db)
        return ApiResponse.json(
            200,
            {
                "@odata.context": (
                    f"{request.service_root}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"
                ),
                "BusinessUnitId": str(self.business_unit),
                "UserId": str(caller),
                "OrganizationId": str(self.organization),
            },
        )

    async def _caller(self, request: ApiRequest, db: Executor) -> UUID:
        """The integration user, or the user ``CallerObjectId`` / ``MSCRMCallerID`` names."""
        object_id = request.header("callerobjectid")
        caller_id = request.header("mscrmcallerid")
        if object_id is not None:
            value = parse_guid(object_id, "the CallerObjectId header")
            column, described = "azureactivedirectoryobjectid", "AzureActiveDirectoryObjectId"
        elif caller_id is not None:
            value = parse_guid(caller_id, "the MSCRMCallerID header")
            column, described = "systemuserid", "Id"
        else:
            return self.integration_user
        row = await db.fetchrow(
            f"SELECT systemuserid, isdisabled FROM systemusers WHERE {ident(column)} = $1", value
        )
        if row is None:
            raise ApiProblem(
                Kind.NOT_FOUND, f"systemuser With {described} = {value} Does Not Exist"
            )
        if row["isdisabled"]:
            raise ApiProblem(
                Kind.BAD_REQUEST,
                f"The user with SystemUserId = {row['systemuserid']} is disabled and cannot be "
                "impersonated.",
            )
        user: UUID = row["systemuserid"]
        return user

    # ------------------------------------------------------------ writes

    def _entity_id(self, request: ApiRequest, spec: TableSpec, key: object) -> str:
        # A header carries it: characters beyond ASCII in an alternate key are escaped.
        text = quote(str(key), safe=_KEY_SAFE)
        return f"{request.service_root}/{spec.entity.entity_set}({text})"

    def _written(
        self,
        request: ApiRequest,
        spec: TableSpec,
        record: Any,
        fields: Sequence[FieldDef],
        status: int,
        entity_id: str,
    ) -> ApiResponse:
        etag = dataverse_etag(record[VERSION_ALIAS])
        preferences = parse_prefer(request.header("prefer"))
        if preferences.get("return") != "representation":
            return ApiResponse.empty(204, {"OData-EntityId": entity_id, "ETag": etag})
        body = {
            "@odata.context": reads.context_url(request, spec, True),
            **reads.shape(spec, record, fields, False),
        }
        headers = {"ETag": etag, "Preference-Applied": "return=representation"}
        if status == 201:
            headers["Location"] = entity_id
        return ApiResponse.json(status, body, headers)

    def _returned_fields(self, request: ApiRequest, spec: TableSpec) -> tuple[FieldDef, ...]:
        """What a write returns: the ``$select``ed row for ``return=representation``."""
        if parse_prefer(request.header("prefer")).get("return") == "representation":
            return reads.selected_fields(spec, request)
        return (spec.entity.fields[spec.entity.key],)

    def _duplicate(self) -> ApiProblem:
        return ApiProblem(Kind.DUPLICATE, DUPLICATE_MESSAGE)

    async def _create(self, request: ApiRequest, db: Executor, spec: TableSpec) -> ApiResponse:
        body = split_body(spec, json_object(request), request.references)
        missing = missing_required(spec, body)
        if missing:
            raise required_problem(spec, missing)
        caller = await self._caller(request, db)
        params = Params()
        assigns = write_assigns(spec, body, params, params.add(caller, "uuid"), creating=True)
        fields = self._returned_fields(request, spec)
        sql = insert_sql(spec, assigns, select_list(spec, fields))
        try:
            record = await db.fetchrow(sql, *params.values)
        except asyncpg.UniqueViolationError:
            raise self._duplicate() from None
        except asyncpg.ForeignKeyViolationError:
            raise ApiProblem(
                Kind.RELATION, "A record the payload refers to does not exist."
            ) from None
        key = record[spec.entity.key]
        entity_id = self._entity_id(request, spec, key)
        return self._written(request, spec, record, fields, 201, entity_id)

    @staticmethod
    def _versions(tags: frozenset[str]) -> list[int]:
        return [int(t) for t in tags if t.isdigit()]

    async def _missing_or_stale(self, db: Executor, key: KeyRef) -> ApiProblem:
        params = Params()
        exists = await db.fetchval(
            f"SELECT 1 FROM {key.spec.table} WHERE {key.predicate(params)}", *params.values
        )
        if not exists:
            return ApiProblem(Kind.NOT_FOUND, key.describe())
        return ApiProblem(Kind.STALE, STALE_MESSAGE)

    async def _patch(self, request: ApiRequest, db: Executor, key: KeyRef) -> ApiResponse:
        spec = key.spec
        body = split_body(spec, json_object(request), request.references)
        check_body_key(key, body)
        if_match = parse_precondition(request.header("if-match"))
        if_none_match = parse_precondition(request.header("if-none-match"))
        caller = await self._caller(request, db)
        fields = self._returned_fields(request, spec)
        entity_id = self._entity_id(request, spec, key.text)
        try:
            if if_match is not None:
                versions = None if if_match.any else self._versions(if_match.tags)
                record = await self._update(db, key, body, caller, fields, versions)
                if record is None:
                    raise await self._missing_or_stale(db, key)
                return self._written(request, spec, record, fields, 200, entity_id)
            if if_none_match is not None and if_none_match.any:
                record = await self._insert_at(db, key, body, caller, fields)
                return self._written(request, spec, record, fields, 201, entity_id)
            record, inserted = await self._upsert(db, key, body, caller, fields)
        except asyncpg.UniqueViolationError:
            raise self._duplicate() from None
        return self._written(request, spec, record, fields, 201 if inserted else 200, entity_id)

    async def _update(
        self,
        db: Executor,
        key: KeyRef,
        body: Body,
        caller: UUID,
        fields: Sequence[FieldDef],
        versions: list[int] | None,
    ) -> Any:
        spec = key.spec
        params = Params()
        assigns = write_assigns(spec, body, params, params.add(caller, "uuid"), creating=False)
        where = key.predicate(params)
        if versions is not None:
            where += f" AND versionnumber = ANY({params.add(versions, 'bigint[]')})"
        sql = update_sql(spec, assigns, where, select_list(spec, fields))
        return await db.fetchrow(sql, *params.values)

    async def _insert_at(
        self, db: Executor, key: KeyRef, body: Body, caller: UUID, fields: Sequence[FieldDef]
    ) -> Any:
        spec = key.spec
        creating = with_key(key, body)
        missing = missing_required(spec, creating)
        if missing:
            raise required_problem(spec, missing)
        params = Params()
        assigns = write_assigns(spec, creating, params, params.add(caller, "uuid"), creating=True)
        return await db.fetchrow(
            insert_sql(spec, assigns, select_list(spec, fields)), *params.values
        )

    async def _upsert(
        self, db: Executor, key: KeyRef, body: Body, caller: UUID, fields: Sequence[FieldDef]
    ) -> tuple[Any, bool]:
        spec = key.spec
        entity = spec.entity
        creating = with_key(key, body)
        if missing_required(spec, creating) or key_differs(key, body):
            # Update by the URL's key first; create only when nothing matched.
            record = await self._update(db, key, without_key(key, body), caller, fields, None)
            if record is not None:
                return record, False
            return await self._insert_at(db, key, body, caller, fields), True
        params = Params()
        assigns = write_assigns(spec, creating, params, params.add(caller, "uuid"), creating=True)
        if key.id is not None:
            conflict = f"({ident(entity.key)})"
            keep = frozenset({entity.key})
        else:
            names = [f.name for f, _ in key.alternate]
            exprs = ", ".join(f"({spec.text_expr(ident(n))})" for n in names)
            where = " AND ".join(f"{ident(n)} IS NOT NULL" for n in names)
            conflict = f"({exprs}) WHERE {where}"
            keep = frozenset({entity.key, *names})
        sql = upsert_sql(spec, assigns, conflict, select_list(spec, fields), keep)
        record = await db.fetchrow(sql, *params.values)
        return record, bool(record[INSERTED_ALIAS])

    async def _delete(self, request: ApiRequest, db: Executor, key: KeyRef) -> ApiResponse:
        spec = key.spec
        condition = parse_precondition(request.header("if-match"))
        params = Params()
        where = key.predicate(params)
        if condition is not None and not condition.any:
            versions = params.add(self._versions(condition.tags), "bigint[]")
            where += f" AND versionnumber = ANY({versions})"
        try:
            deleted = await db.fetchval(delete_sql(spec, where), *params.values)
        except asyncpg.ForeignKeyViolationError:
            raise ApiProblem(Kind.IN_USE, IN_USE_MESSAGE) from None
        if deleted is None:
            raise await self._missing_or_stale(db, key)
        return ApiResponse.empty(204)

    # ------------------------------------------------------------ properties and $ref

    async def _member(
        self, request: ApiRequest, db: Executor, key: KeyRef, rest: str
    ) -> ApiResponse:
        spec = key.spec
        entity = spec.entity
        name, _, suffix = rest.partition("/")
        method = request.method
        if suffix == "$ref":
            found = entity.lookup_for_navigation(name)
            if found is None:
                raise ApiProblem(
                    Kind.NO_RESOURCE,
                    f"'{name}' is not a navigation property of {entity.entity_set}.",
                )
            if method == "DELETE":
                return await self._write_body(request, db, key, {f"{name}@odata.bind": None})
            if method == "PUT":
                payload = json_object(request)
                reference = payload.get("@odata.id")
                if not isinstance(reference, str):
                    raise ApiProblem(
                        Kind.BAD_REQUEST, 'A $ref body is {"@odata.id": "<set>(<id>)"}.'
                    )
                parse_reference(reference, request.references)
                return await self._write_body(request, db, key, {f"{name}@odata.bind": reference})
            raise self._not_allowed(request, rest)
        if suffix:
            raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{suffix}'.")
        field = entity.fields.get(name)
        if field is None:
            if entity.lookup_for_navigation(name) is not None:
                raise ApiProblem(
                    Kind.NOT_SUPPORTED,
                    f"Reading the navigation property '{name}' is not supported by this emulator; "
                    f"select _{name}_value instead.",
                )
            raise ApiProblem(
                Kind.NO_RESOURCE,
                f"Could not find a property named '{name}' on type '{spec.type_name}'.",
            )
        if method == "GET":
            record = await reads.fetch(db, key, (field,))
            if record is None:
                raise ApiProblem(Kind.NOT_FOUND, key.describe())
            if record[field.name] is None:
                return ApiResponse.empty(204)
            return ApiResponse.json(
                200,
                {
                    "@odata.context": f"{request.service_root}/$metadata#"
                    f"{entity.entity_set}({key.text})/{name}",
                    "value": record[field.name],
                },
            )
        if method == "PUT":
            payload = json_object(request)
            if "value" not in payload:
                raise ApiProblem(Kind.BAD_REQUEST, 'A property body is {"value": <value>}.')
            return await self._write_body(request, db, key, {name: payload["value"]})
        if method == "DELETE":
            convert(field, None)
            return await self._write_body(request, db, key, {name: None})
        raise self._not_allowed(request, rest)

    async def _write_body(
        self, request: ApiRequest, db: Executor, key: KeyRef, payload: dict[str, object]
    ) -> ApiResponse:
        spec = key.spec
        body = split_body(spec, payload, request.references)
        caller = await self._caller(request, db)
        key_field = (spec.entity.fields[spec.entity.key],)
        try:
            record = await self._update(db, key, body, caller, key_field, None)
        except asyncpg.UniqueViolationError:
            raise self._duplicate() from None
        if record is None:
            raise ApiProblem(Kind.NOT_FOUND, key.describe())
        return ApiResponse.empty(204)
