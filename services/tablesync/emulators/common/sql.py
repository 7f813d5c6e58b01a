"""SQL text building blocks: quoting, bind parameters, column types, read formatting.

Every value from a request reaches SQL as a bind parameter; only names from the
catalog (checked against it first) are ever written into the statement text.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal, Protocol
from uuid import UUID

from tablesync.core.catalog import DefaultValue, Entity, FieldDef, Lookup

__all__ = [
    "Executor",
    "Params",
    "TableSpec",
    "ident",
    "literal",
    "output_expr",
    "sql_type",
    "target_column",
]

Precision = Literal["milliseconds", "second"]

_SQL_TYPES = {
    "Edm.Guid": "uuid",
    "Edm.String": "text",
    "Edm.Int32": "integer",
    "Edm.Int64": "bigint",
    "Edm.Decimal": "numeric",
    "Edm.Boolean": "boolean",
    "Edm.DateTimeOffset": "timestamptz",
    "Edm.Date": "date",
}

_DATETIME_FORMATS: dict[Precision, str] = {
    "milliseconds": 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"',
    "second": 'YYYY-MM-DD"T"HH24:MI:SS"Z"',
}


class Executor(Protocol):
    """What an asyncpg pool and an asyncpg connection both offer."""

    async def fetch(self, query: str, *args: object) -> list[Any]: ...

    async def fetchrow(self, query: str, *args: object) -> Any: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def execute(self, query: str, *args: object) -> str: ...


@functools.lru_cache(maxsize=4096)
def ident(name: str) -> str:
    """A quoted SQL identifier (every statement quotes the same few names)."""
    return '"' + name.replace('"', '""') + '"'


class Params:
    """Bind parameters in order; ``add`` returns the placeholder to write."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object, cast: str | None = None) -> str:
        self.values.append(value)
        placeholder = f"${len(self.values)}"
        return f"{placeholder}::{cast}" if cast else placeholder


def literal(value: DefaultValue) -> str:
    """SQL text for a catalog constant (never for request data, which is always bound)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, UUID):
        return f"'{value}'::uuid"
    if isinstance(value, date):
        return f"'{value.isoformat()}'::date"
    return "'" + value.replace("'", "''") + "'"


def sql_type(field: FieldDef) -> str:
    return _SQL_TYPES[field.edm_type]


def target_column(lookup: Lookup, entity_set: str) -> str:
    """The hidden column that holds a polymorphic lookup's value for one target table."""
    return f"{lookup.value_field}@{entity_set}"


@dataclass(frozen=True, slots=True)
class TableSpec:
    """How one entity set is stored on one emulator."""

    entity: Entity
    version_column: str
    precision: Precision
    case_insensitive: bool
    """Dataverse compares and sorts text without regard to case, as its SQL collation does."""
    namespace: str
    """The EDM namespace of the entity types: ``Microsoft.NAV``, ``Microsoft.Dynamics.CRM``."""
    extra_indexes: tuple[str, ...] = ()
    """Index definitions (``(columns) [WHERE …]``) the side's own lookups need."""
    unique_columns: tuple[str, ...] = ()
    """Columns that must be unique besides the key and the number field."""
    change_log: bool = False
    """Every committed change of a row is noted in the change log (``schema.CHANGES_TABLE``),
    in commit order: what Dataverse change tracking serves."""
    triggers: tuple[str, ...] = ()
    """Statements (functions, triggers) that make the server's own rules of the table,
    run once every table and foreign key exists: what a write does beyond its row."""

    @property
    def table(self) -> str:
        return ident(self.entity.entity_set)

    @property
    def type_name(self) -> str:
        return f"{self.namespace}.{self.entity.logical_name}"

    def text_expr(self, column_sql: str) -> str:
        """``column_sql`` as strings compare on this side."""
        return f"lower({column_sql})" if self.case_insensitive else column_sql

    def stamp_expr(self) -> str:
        """The server clock at this side's precision."""
        return f"date_trunc('{self.precision}', clock_timestamp())"


def output_expr(spec: TableSpec, field: FieldDef, qualifier: str = "") -> str:
    """The SQL that reads ``field`` as its JSON value, aliased to the property name."""
    column = qualifier + ident(field.name)
    if field.edm_type == "Edm.DateTimeOffset":
        fmt = _DATETIME_FORMATS[spec.precision]
        value = f"to_char({column} AT TIME ZONE 'UTC', '{fmt}')"
    elif field.edm_type == "Edm.Date":
        value = f"to_char({column}, 'YYYY-MM-DD')"
    elif field.edm_type == "Edm.Decimal":
        value = f"{column}::float8"
    elif field.edm_type == "Edm.Guid":
        # Text from the server: cheaper than a UUID object per value to serialise.
        value = f"{column}::text"
    else:
        return column
    return f"{value} AS {ident(field.name)}"
