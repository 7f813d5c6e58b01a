"""INSERT / UPDATE / upsert / DELETE statements built from column assignments.

Each write is one statement that also returns the row as the response shows it, so a
request costs one round trip; a write of many rows (Dataverse's bulk messages) is one
statement too, reading its rows from a FROM item (``insert_select_sql``,
``update_from_sql``). A side describes a write as ``Assign`` items; an item's
expression may depend on the current value of other columns (computed fields), which
differs between an INSERT (the column default), an UPDATE (the stored value) and the
update arm of an upsert (the stored row, qualified by the table name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import TableSpec, ident, literal

__all__ = [
    "INSERTED_ALIAS",
    "Assign",
    "Current",
    "db_problem",
    "delete_sql",
    "insert_select_sql",
    "insert_sql",
    "update_from_sql",
    "update_sql",
    "upsert_sql",
]

Current = Callable[[str], str]
"""Column name → SQL for that column's value before this write."""

INSERTED_ALIAS = "@inserted"


@dataclass(frozen=True, slots=True)
class Assign:
    column: str
    expr: str | Callable[[Current], str]
    on_insert: bool = True
    on_update: bool = True

    def render(self, current: Current) -> str:
        return self.expr if isinstance(self.expr, str) else self.expr(current)


def _insert_current(spec: TableSpec) -> Current:
    def current(column: str) -> str:
        field = spec.entity.fields.get(column)
        return literal(field.default) if field is not None else "NULL"

    return current


def insert_sql(spec: TableSpec, assigns: Sequence[Assign], returning: str) -> str:
    used = [a for a in assigns if a.on_insert]
    current = _insert_current(spec)
    columns = ", ".join(ident(a.column) for a in used)
    values = ", ".join(a.render(current) for a in used)
    if not used:
        return f"INSERT INTO {spec.table} DEFAULT VALUES RETURNING {returning}"
    return f"INSERT INTO {spec.table} ({columns}) VALUES ({values}) RETURNING {returning}"


def update_sql(spec: TableSpec, assigns: Sequence[Assign], where: str, returning: str) -> str:
    sets = ", ".join(f"{ident(a.column)} = {a.render(ident)}" for a in assigns if a.on_update)
    return f"UPDATE {spec.table} SET {sets} WHERE {where} RETURNING {returning}"


def insert_select_sql(
    spec: TableSpec, assigns: Sequence[Assign], source: str, where: str | None = None
) -> str:
    """INSERT … SELECT: a row for each row of the FROM item ``source`` (that meets
    ``where``), whose columns the assignments' expressions read."""
    used = [a for a in assigns if a.on_insert]
    current = _insert_current(spec)
    columns = ", ".join(ident(a.column) for a in used)
    values = ", ".join(a.render(current) for a in used)
    condition = f" WHERE {where}" if where else ""
    return f"INSERT INTO {spec.table} ({columns}) SELECT {values} FROM {source}{condition}"


def update_from_sql(
    spec: TableSpec,
    assigns: Sequence[Assign],
    source: str,
    where: str,
    returning: str,
    keep: frozenset[str] = frozenset(),
) -> str:
    """UPDATE … FROM ``source``: each row ``where`` pairs with a row of ``source`` takes that
    row's values; ``keep`` columns are not written (the key of an upsert)."""
    sets = ", ".join(
        f"{ident(a.column)} = {a.render(ident)}"
        for a in assigns
        if a.on_update and a.column not in keep
    )
    return f"UPDATE {spec.table} SET {sets} FROM {source} WHERE {where} RETURNING {returning}"


def upsert_sql(
    spec: TableSpec,
    assigns: Sequence[Assign],
    conflict: str,
    returning: str,
    keep: frozenset[str] = frozenset(),
) -> str:
    """INSERT … ON CONFLICT (``conflict``) DO UPDATE; ``keep`` columns are not updated.

    ``returning`` may read ``(xmax = 0)``, true for a row this statement inserted.
    """
    insert = insert_sql(spec, assigns, returning).split(" RETURNING ", 1)[0]

    def stored(column: str) -> str:
        return f"{spec.table}.{ident(column)}"

    sets = ", ".join(
        f"{ident(a.column)} = {a.render(stored)}"
        for a in assigns
        if a.on_update and a.column not in keep
    )
    action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
    return (
        f"{insert} ON CONFLICT {conflict} {action} "
        f"RETURNING {returning}, (xmax = 0) AS {ident(INSERTED_ALIAS)}"
    )


def delete_sql(spec: TableSpec, where: str) -> str:
    return f"DELETE FROM {spec.table} WHERE {where} RETURNING {ident(spec.version_column)}"


def db_problem(exc: asyncpg.PostgresError) -> ApiProblem | None:
    """The API refusal a database error stands for; None when it is a server fault."""
    if isinstance(exc, asyncpg.RaiseError) and str(exc.message).startswith("tablesync:"):
        kind = Kind(str(exc.message).removeprefix("tablesync:"))
        return ApiProblem(kind, str(exc.detail or ""))
    if isinstance(exc, asyncpg.DataError):
        return ApiProblem(Kind.BAD_VALUE, f"A value is out of range for its column: {exc.message}")
    if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
        return ApiProblem(
            Kind.UNAVAILABLE,
            "The request collided with a concurrent one; retry it.",
            status=503,
            headers={"Retry-After": "1"},
        )
    return None
