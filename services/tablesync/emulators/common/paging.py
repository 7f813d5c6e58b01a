"""Keyset paging: a ``$skiptoken`` carries the last row's sort values and key.

The next page starts strictly after that row in the query's total order (the
``$orderby`` keys, then the primary key), so a row that changes while a client pages is
never skipped: it keeps its place, or moves behind the cursor and shows up again.
Nulls sort first ascending and last descending, as SQL Server (under both APIs) does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from uuid import UUID

import orjson

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Params, TableSpec, ident, sql_type

__all__ = ["Cursor", "OrderKey", "after_predicate", "order_by", "sort_expr"]

_TOKEN_VERSION = 1


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: FieldDef
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts, and how many rows ``$top`` still allows."""

    values: tuple[object, ...]
    remaining: int | None

    def encode(self, keys: Sequence[OrderKey]) -> str:
        raw = [_to_json(k.field, v) for k, v in zip(keys, self.values, strict=True)]
        payload = orjson.dumps([_TOKEN_VERSION, raw, self.remaining])
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, keys: Sequence[OrderKey]) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            version, raw, remaining = orjson.loads(base64.urlsafe_b64decode(padded))
            if version != _TOKEN_VERSION or len(raw) != len(keys):
                raise ValueError("token does not match this query")
            if remaining is not None and (not isinstance(remaining, int) or remaining < 0):
                raise ValueError("bad remaining count")
            values = tuple(_from_json(k.field, v) for k, v in zip(keys, raw, strict=True))
        except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
            raise ApiProblem(
                Kind.BAD_QUERY,
                f"The $skiptoken is not valid for this query ({exc}); use the @odata.nextLink "
                "the previous page returned, unchanged.",
            ) from None
        return cls(values, remaining)


def _to_json(field: FieldDef, value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot page on {field.name} of type {type(value).__name__}")


def _from_json(field: FieldDef, raw: object) -> object:
    if raw is None:
        return None
    kind = field.edm_type
    try:
        if kind == "Edm.Guid" and isinstance(raw, str):
            return UUID(raw)
        if kind == "Edm.Decimal" and isinstance(raw, str):
            return Decimal(raw)
        if kind == "Edm.DateTimeOffset" and isinstance(raw, str):
            return datetime.fromisoformat(raw)
        if kind == "Edm.Date" and isinstance(raw, str):
            return date.fromisoformat(raw)
    except (ValueError, InvalidOperation):
        raise ValueError(f"bad value for {field.name}") from None
    if kind in ("Edm.Int32", "Edm.Int64") and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "Edm.Boolean" and isinstance(raw, bool):
        return raw
    if kind == "Edm.String" and isinstance(raw, str):
        return raw
    raise ValueError(f"bad value for {field.name}")


def sort_expr(spec: TableSpec, field: FieldDef) -> str:
    # Qualified: a bare name in ORDER BY would mean the formatted output column of the
    # same name (text), which sorts slowly and without the index.
    column = f"{spec.table}.{ident(field.name)}"
    return spec.text_expr(column) if field.edm_type == "Edm.String" else column


def order_by(spec: TableSpec, keys: Sequence[OrderKey]) -> str:
    parts = []
    for key in keys:
        direction = "DESC" if key.descending else "ASC"
        if key.field.nullable:
            direction += " NULLS LAST" if key.descending else " NULLS FIRST"
        # Without a NULLS clause on non-null keys the (stamp, key) and key indexes serve it.
        parts.append(f"{sort_expr(spec, key.field)} {direction}")
    return ", ".join(parts)


def _value(spec: TableSpec, params: Params, field: FieldDef, value: object) -> str:
    placeholder = params.add(value, sql_type(field))
    return spec.text_expr(placeholder) if field.edm_type == "Edm.String" else placeholder


def after_predicate(
    spec: TableSpec, keys: Sequence[OrderKey], values: Sequence[object], params: Params
) -> str:
    """SQL true for the rows strictly after ``values`` in the order of ``keys``.

    The last key is the primary key, never null, so the order is total.
    """
    if all(not k.field.nullable for k in keys) and len({k.descending for k in keys}) == 1:
        # One direction over non-null keys: a row comparison the (stamp, key) index serves.
        columns = ", ".join(sort_expr(spec, k.field) for k in keys)
        bound = ", ".join(
            _value(spec, params, k.field, v) for k, v in zip(keys, values, strict=True)
        )
        op = "<" if keys[0].descending else ">"
        return f"({columns}) {op} ({bound})"
    clause = "FALSE"
    # Built from the last key outwards:
    # after(k_i..) = beyond(k_i) OR (same(k_i) AND after(k_i+1..)).
    for key, value in reversed(list(zip(keys, values, strict=True))):
        beyond, same = _beyond_and_same(spec, params, key, value)
        clause = f"({beyond} OR ({same} AND {clause}))"
    return clause


def _beyond_and_same(
    spec: TableSpec, params: Params, key: OrderKey, value: object
) -> tuple[str, str]:
    column = sort_expr(spec, key.field)
    if value is None:
        same = f"{ident(key.field.name)} IS NULL"
        # Nulls come first ascending, so every non-null is beyond; descending, nothing is.
        beyond = f"{ident(key.field.name)} IS NOT NULL" if not key.descending else "FALSE"
        return beyond, same
    bound = _value(spec, params, key.field, value)
    if key.descending:
        beyond = f"({column} < {bound} OR {ident(key.field.name)} IS NULL)"
    else:
        beyond = f"{column} > {bound}"
    return beyond, f"{column} = {bound}"
