"""Dataverse's bulk operation messages, bound to an entity set's collection.

Follows "Use bulk operation messages" and the Web API reference of the ``CreateMultiple``,
``UpdateMultiple`` and ``UpsertMultiple`` actions:

    POST <set>/Microsoft.Dynamics.CRM.CreateMultiple  {"Targets": [{...}, ...]}
        200 {"@odata.context": "…/$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse",
             "Ids": [<id of each target, in order>]}
    POST <set>/Microsoft.Dynamics.CRM.UpdateMultiple  {"Targets": [...]}    204
    POST <set>/Microsoft.Dynamics.CRM.UpsertMultiple  {"Targets": [...]}    204

- Every target carries ``"@odata.type": "Microsoft.Dynamics.CRM.<logical name>"`` of the
  set the action is bound to.
- A target is the body of the single-record write it stands for and is checked as that
  write checks it, with the same messages and codes: properties, ``@odata.bind`` lookups,
  required fields, a primary key given on create. A create may give its primary key; an
  update names its row by the primary key column (as the UpdateMultiple example does) or
  by ``@odata.id``; an upsert by ``@odata.id`` (``<set>(<id>)`` or an alternate key
  ``<set>(<key>='<value>')``, as the UpsertMultiple example does) or by the primary key
  column. Each row is stamped (``modifiedon``, ``versionnumber``) and noted by change
  tracking as its single write would be.
- Standard tables: the request is one transaction. The first refused target fails the
  whole request and nothing is written ("On Error behavior with standard tables"); an
  UpdateMultiple target whose row does not exist fails it with
  ``<table> With Ids = <id> Do Not Exist`` (404), as the page's troubleshooting names it.
  A row named by two targets of an update or upsert is refused (400).
- The actions answer no representation and no ETags (``Prefer: return=representation``
  changes nothing), and each counts as one request against the service protection
  limits ("How are API limits applied?"). They are not taken inside ``$batch``: the
  documentation does not say that they may be.

The whole request is one SQL statement, one database round trip: the targets that read
the same way (the same columns, the same kinds of lookup) are one arm of it, an INSERT …
SELECT or an UPDATE … FROM over ``unnest`` of one array per value, and a final SELECT
fails the statement, naming the first such target, when an update matched no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID, uuid4

import asyncpg

from tablesync.emulators.common.limiter import count_written
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.payload import json_object
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Executor, Params, TableSpec, ident
from tablesync.emulators.common.writes import insert_select_sql, update_from_sql
from tablesync.emulators.dataverse.keys import KeyRef, parse_key, parse_reference
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

__all__ = ["ACTIONS", "Message", "is_bulk", "run"]

Message = Literal["CreateMultiple", "UpdateMultiple", "UpsertMultiple"]
_NAMESPACE = "Microsoft.Dynamics.CRM."
ACTIONS: Mapping[str, Message] = {
    f"{_NAMESPACE}CreateMultiple": "CreateMultiple",
    f"{_NAMESPACE}UpdateMultiple": "UpdateMultiple",
    f"{_NAMESPACE}UpsertMultiple": "UpsertMultiple",
}
_ROW = ident("@row")
_SOURCE = "<<source>>"
"""Stands for the FROM item of an arm until the statement numbers its arrays; never part
of generated SQL otherwise (values are bound, names come from the catalog)."""
_INDEX = ident("@i")


def is_bulk(path: str) -> bool:
    """Whether ``path`` (relative to the service root) invokes a bulk message."""
    _, slash, action = path.rstrip("/").partition("/")
    return bool(slash) and action in ACTIONS


class _RowParams(Params):
    """The values of one target as columns of its arm's ``unnest``: ``add`` answers the
    column that holds the value (typed by its array) and remembers its type."""

    __slots__ = ("casts",)

    def __init__(self) -> None:
        super().__init__()
        self.casts: list[str] = []

    def add(self, value: object, cast: str | None = None) -> str:
        self.values.append(value)
        self.casts.append(cast or "text")
        return f"{_ROW}.{ident(f'@p{len(self.values)}')}"


@dataclass(slots=True)
class _Arm:
    """Targets whose statement reads alike: one INSERT or UPDATE over their values."""

    update: bool
    sql: str
    """With ``_SOURCE`` for the FROM item."""
    casts: tuple[str, ...]
    rows: list[list[object]] = field(default_factory=list)


@dataclass(slots=True)
class _Statement:
    caller: str
    params: Params
    arms: dict[tuple[bool, str, tuple[str, ...]], _Arm] = field(default_factory=dict)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    """(target index, Kind, message) of targets whose update must match a row."""

    def add(self, update: bool, sql: str, row: _RowParams) -> None:
        signature = (update, sql, tuple(row.casts))
        arm = self.arms.get(signature)
        if arm is None:
            arm = self.arms[signature] = _Arm(update, sql, signature[2])
        arm.rows.append(row.values)

    def render(self) -> str:
        ctes: list[str] = []
        updates: list[str] = []
        for number, arm in enumerate(self.arms.values()):
            arrays = [
                self.params.add([row[k] for row in arm.rows], f"{cast}[]")
                for k, cast in enumerate(arm.casts)
            ]
            columns = ", ".join(ident(f"@p{k + 1}") for k in range(len(arrays)))
            source = f"unnest({', '.join(arrays)}) AS {_ROW}({columns})"
            name = ident(f"@arm{number}")
            ctes.append(f"{name} AS ({arm.sql.replace(_SOURCE, source)})")
            if arm.update:
                updates.append(f"SELECT {_INDEX} FROM {name}")
        check = "SELECT NULL"
        if self.failures:
            indexes, kinds, messages = zip(*self.failures, strict=True)
            failed = (
                f"SELECT f.kind, f.message FROM unnest("
                f"{self.params.add(list(indexes), 'integer[]')}, "
                f"{self.params.add(list(kinds), 'text[]')}, "
                f"{self.params.add(list(messages), 'text[]')}) AS f(i, kind, message) "
                f"WHERE f.i NOT IN ({' UNION ALL '.join(updates)}) ORDER BY f.i LIMIT 1"
            )
            # The LIMIT is taken before the outer SELECT raises, so the first target is named.
            check = f"SELECT ts_raise(first.kind, first.message) FROM ({failed}) AS first"
        return f"WITH {', '.join(ctes)} {check}"


def _targets(request: ApiRequest, spec: TableSpec, message: Message) -> list[dict[str, object]]:
    payload = json_object(request)
    targets = payload.get("Targets")
    if not isinstance(targets, list) or not targets:
        raise ApiProblem(
            Kind.BAD_REQUEST,
            f"{message} takes a 'Targets' parameter: a non-empty array of "
            f"{spec.type_name} records.",
        )
    for index, target in enumerate(targets):
        if not isinstance(target, dict):
            raise ApiProblem(
                Kind.BAD_REQUEST, f"Targets[{index}] of {message} is not a JSON object."
            )
        kind = target.get("@odata.type")
        if kind != spec.type_name:
            described = "no @odata.type" if kind is None else f"@odata.type '{kind}'"
            raise ApiProblem(
                Kind.BAD_REQUEST,
                f"Targets[{index}] of {message} has {described}: every target must set "
                f"'@odata.type' to '{spec.type_name}', the type of {spec.entity.entity_set}.",
            )
    return targets


def _addressed(spec: TableSpec, target: Mapping[str, object], body: Body) -> KeyRef | None:
    """The row a target of an update or upsert names: by ``@odata.id``, else by its
    primary key column; None when it names none."""
    reference = target.get("@odata.id")
    if reference is None:
        given = body.values.get(spec.entity.key)
        return KeyRef(spec, id=given, text=str(given)) if isinstance(given, UUID) else None
    if not isinstance(reference, str):
        raise ApiProblem(Kind.BAD_VALUE, "'@odata.id' must be a reference such as '<set>(<id>)'.")
    entity_set, key_text = parse_reference(reference, {})
    if entity_set != spec.entity.entity_set:
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"'@odata.id' must reference {spec.entity.entity_set}, not {entity_set}.",
        )
    key = parse_key(spec, key_text)
    check_body_key(key, body)
    return key


def _identity(key: KeyRef) -> tuple[object, ...]:
    """What makes two keys name the same row (text keys compare without regard to case)."""
    if key.id is not None:
        return (key.id,)
    return tuple(
        (f.name, v.lower() if isinstance(v, str) and key.spec.case_insensitive else v)
        for f, v in key.alternate
    )


def _not_found(key: KeyRef) -> str:
    if key.id is not None:
        return f"{key.spec.entity.logical_name} With Ids = {key.id} Do Not Exist"
    return key.describe()


class _Builder:
    def __init__(self, spec: TableSpec, statement: _Statement) -> None:
        self.spec = spec
        self.statement = statement

    def insert(self, index: int, body: Body, unless: KeyRef | None = None) -> None:
        """Creates the row of ``body``; with ``unless``, only when no row has that key."""
        spec = self.spec
        row = _RowParams()
        row.add(index, "integer")
        assigns = write_assigns(spec, body, row, self.statement.caller, creating=True)
        where = None
        if unless is not None:
            table = ident("@t")
            where = (
                f"NOT EXISTS (SELECT 1 FROM {spec.table} AS {table} "
                f"WHERE {unless.predicate(row, f'{table}.')})"
            )
        self.statement.add(False, insert_select_sql(spec, assigns, _SOURCE, where), row)

    def update(
        self,
        index: int,
        key: KeyRef,
        body: Body,
        *,
        creating: bool = False,
        keep: frozenset[str] = frozenset(),
        failure: tuple[Kind, str] | None = None,
    ) -> None:
        """Writes ``body`` over the row ``key`` names; ``failure`` fails the request when
        there is none."""
        spec = self.spec
        row = _RowParams()
        position = row.add(index, "integer")
        assigns = write_assigns(spec, body, row, self.statement.caller, creating=creating)
        where = key.predicate(row, f"{spec.table}.")
        returning = f"{position} AS {_INDEX}"
        sql = update_from_sql(spec, assigns, _SOURCE, where, returning, keep)
        self.statement.add(True, sql, row)
        if failure is not None:
            kind, message = failure
            self.statement.failures.append((index, kind.value, message))


def _create(builder: _Builder, index: int, target: Mapping[str, object]) -> UUID:
    spec = builder.spec
    body = split_body(spec, target, {})
    missing = missing_required(spec, body)
    if missing:
        raise required_problem(spec, missing)
    given = body.values.get(spec.entity.key)
    record_id = given if isinstance(given, UUID) else uuid4()
    builder.insert(index, Body({**body.values, spec.entity.key: record_id}, body.binds))
    return record_id


def _update(builder: _Builder, index: int, target: Mapping[str, object]) -> KeyRef:
    spec = builder.spec
    body = split_body(spec, target, {})
    key = _addressed(spec, target, body)
    if key is None:
        raise ApiProblem(
            Kind.BAD_REQUEST,
            f"Targets[{index}] of UpdateMultiple names no record: set its "
            f"'{spec.entity.key}' (or '@odata.id').",
        )
    values = {k: v for k, v in body.values.items() if k != spec.entity.key}
    builder.update(index, key, Body(values, body.binds), failure=(Kind.NOT_FOUND, _not_found(key)))
    return key


def _upsert(builder: _Builder, index: int, target: Mapping[str, object]) -> KeyRef:
    """As ``DataverseService._upsert``: the row the key names takes the body, else a row is
    created at that key; a body that cannot create (a required field missing) or that
    moves the row to other alternate key values is written over an existing row only."""
    spec = builder.spec
    entity = spec.entity
    body = split_body(spec, target, {})
    key = _addressed(spec, target, body)
    if key is None:
        raise ApiProblem(
            Kind.BAD_REQUEST,
            f"Targets[{index}] of UpsertMultiple names no record: set its '@odata.id' "
            f"(or '{entity.key}').",
        )
    creating = with_key(key, body)
    missing = missing_required(spec, creating)
    if missing:
        failure = required_problem(spec, missing)
        builder.update(index, key, without_key(key, body), failure=(failure.kind, failure.message))
    elif key_differs(key, body):
        builder.update(index, key, without_key(key, body))
        builder.insert(index, creating, unless=key)
    else:
        keep = frozenset({entity.key, *(f.name for f, _ in key.alternate)})
        builder.update(index, key, creating, creating=True, keep=keep)
        builder.insert(index, creating, unless=key)
    return key


async def run(
    request: ApiRequest, db: Executor, spec: TableSpec, message: Message, caller: UUID
) -> ApiResponse:
    """Performs the bulk ``message`` on ``spec``'s table as ``caller``."""
    targets = _targets(request, spec, message)
    params = Params()
    statement = _Statement(params.add(caller, "uuid"), params)
    builder = _Builder(spec, statement)
    ids: list[UUID] = []
    seen: dict[tuple[object, ...], int] = {}
    for index, target in enumerate(targets):
        if message == "CreateMultiple":
            ids.append(_create(builder, index, target))
            continue
        key = (_update if message == "UpdateMultiple" else _upsert)(builder, index, target)
        first = seen.setdefault(_identity(key), index)
        if first != index:
            raise ApiProblem(
                Kind.BAD_REQUEST,
                f"Targets[{first}] and Targets[{index}] of {message} name the same "
                f"{spec.entity.logical_name} ({key.text}): each record may appear once.",
            )
    sql = statement.render()
    try:
        await db.fetch(sql, *params.values)
    except asyncpg.UniqueViolationError:
        raise ApiProblem(Kind.DUPLICATE, DUPLICATE_MESSAGE) from None
    except asyncpg.ForeignKeyViolationError:
        raise ApiProblem(Kind.RELATION, "A record the payload refers to does not exist.") from None
    count_written(len(targets))
    if message != "CreateMultiple":
        return ApiResponse.empty(204)
    return ApiResponse.json(
        200,
        {
            "@odata.context": (
                f"{request.service_root}/$metadata#{_NAMESPACE}CreateMultipleResponse"
            ),
            "Ids": [str(i) for i in ids],
        },
    )
