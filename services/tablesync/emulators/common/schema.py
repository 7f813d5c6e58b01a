"""The emulator's own database: created when missing, one table per entity set.

Tables are generated from the catalog. A fingerprint of the generated DDL is kept in
``_emulator_meta``; when the catalog changes the emulator drops its tables and starts
again, since emulator data is disposable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import asyncpg
import structlog

from tablesync.core.catalog import FieldDef, Lookup
from tablesync.emulators.common.sql import (
    Executor,
    TableSpec,
    ident,
    literal,
    sql_type,
    target_column,
)
from tablesync.settings import with_database

__all__ = [
    "CHANGES_TABLE",
    "META_TABLE",
    "SERIES_TABLE",
    "ddl",
    "ensure_database",
    "ensure_schema",
    "meta_get",
    "meta_set",
    "truncate_all",
]

log = structlog.get_logger()

META_TABLE = "_emulator_meta"
SERIES_TABLE = "_number_series"
CHANGES_TABLE = "_changes"
"""The change log of the tables whose spec has ``change_log``: one row per record, the
number of its last committed change (``seq``) and whether that change deleted it."""
_FINGERPRINT_KEY = "schema_fingerprint"
# Serialises schema creation between emulator processes sharing one database.
_SCHEMA_LOCK = 72_034_911
# Held from the moment a transaction numbers its changes to its end, so change numbers
# are handed out in commit order: a reader that sees change n sees every change before it.
_COMMIT_ORDER_LOCK = 72_034_912

_PREAMBLE = f"""
CREATE SEQUENCE IF NOT EXISTS ts_version;
CREATE TABLE IF NOT EXISTS {META_TABLE} (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {SERIES_TABLE} (
    entity_set text PRIMARY KEY, prefix text NOT NULL, width integer NOT NULL,
    last_no bigint NOT NULL DEFAULT 0
);
-- lpad would cut a number longer than the width; such numbers are kept whole.
CREATE OR REPLACE FUNCTION ts_next_no(series text) RETURNS text LANGUAGE sql AS $$
    UPDATE {SERIES_TABLE} SET last_no = last_no + 1 WHERE entity_set = series
    RETURNING prefix || CASE WHEN length(last_no::text) >= width THEN last_no::text
                             ELSE lpad(last_no::text, width, '0') END
$$;
-- Lets one statement refuse a write with a reason the emulator maps to an API error.
CREATE OR REPLACE FUNCTION ts_raise(kind text, detail text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'tablesync:' || kind, DETAIL = detail;
END
$$;
"""


def _column_ddl(spec: TableSpec, field: FieldDef) -> str:
    entity = spec.entity
    parts = [ident(field.name), sql_type(field)]
    if field.name == entity.key:
        parts.append("PRIMARY KEY")
        if field.edm_type == "Edm.Guid":
            parts.append("DEFAULT gen_random_uuid()")
        return " ".join(parts)
    if field.name == spec.version_column:
        return f"{ident(field.name)} bigint NOT NULL DEFAULT nextval('ts_version')"
    if field.name in (entity.modified_field, entity.created_field):
        return f"{ident(field.name)} timestamptz NOT NULL DEFAULT {spec.stamp_expr()}"
    if not field.nullable:
        parts.append("NOT NULL")
    if field.default is not None:
        parts.append(f"DEFAULT {literal(field.default)}")
    return " ".join(parts)


def _polymorphic_columns(lookup: Lookup) -> list[str]:
    hidden = [target_column(lookup, t.entity_set) for t in lookup.targets]
    value = " , ".join(ident(h) for h in hidden)
    kinds = " ".join(
        f"WHEN {ident(h)} IS NOT NULL THEN '{t.logical_name}'"
        for h, t in zip(hidden, lookup.targets, strict=True)
    )
    return [
        *(f"{ident(h)} uuid" for h in hidden),
        f"{ident(lookup.value_field)} uuid GENERATED ALWAYS AS (COALESCE({value})) STORED",
        f"{ident(lookup.value_field + '@logical')} text "
        f"GENERATED ALWAYS AS (CASE {kinds} END) STORED",
    ]


def _table_ddl(spec: TableSpec) -> list[str]:
    entity = spec.entity
    polymorphic = {lk.value_field: lk for lk in entity.lookups.values() if lk.polymorphic}
    columns: list[str] = []
    for field in entity.fields.values():
        if field.name in polymorphic:
            columns.extend(_polymorphic_columns(polymorphic[field.name]))
        else:
            columns.append(_column_ddl(spec, field))
    if spec.version_column not in entity.fields:
        columns.append(
            f"{ident(spec.version_column)} bigint NOT NULL DEFAULT nextval('ts_version')"
        )
    name = entity.entity_set
    statements = [f"CREATE TABLE {ident(name)} (\n  " + ",\n  ".join(columns) + "\n)"]
    statements.append(
        f"CREATE INDEX {ident(name + '__modified')} ON {ident(name)} "
        f"({ident(entity.modified_field)}, {ident(entity.key)})"
    )
    if entity.number_field:
        statements.append(
            f"CREATE UNIQUE INDEX {ident(name + '__number')} ON {ident(name)} "
            f"({ident(entity.number_field)})"
        )
    for column in spec.unique_columns:
        statements.append(
            f"CREATE UNIQUE INDEX {ident(f'{name}__{column}')} ON {ident(name)} ({ident(column)})"
        )
    for index, definition in enumerate(spec.extra_indexes):
        statements.append(
            f"CREATE INDEX {ident(f'{name}__extra{index}')} ON {ident(name)} {definition}"
        )
    for key in entity.alternate_keys:
        exprs = ", ".join(f"({spec.text_expr(ident(f))})" for f in key.fields)
        where = " AND ".join(f"{ident(f)} IS NOT NULL" for f in key.fields)
        statements.append(
            f"CREATE UNIQUE INDEX {ident(name + '__ak_' + key.name)} ON {ident(name)} "
            f"({exprs}) WHERE {where}"
        )
    for lookup in entity.lookups.values():
        if not lookup.writable:
            # createdby / modifiedby: read back, seldom filtered; an index would slow every write.
            continue
        statements.append(
            f"CREATE INDEX {ident(name + '__' + lookup.attribute)} ON {ident(name)} "
            f"({ident(lookup.value_field)})"
        )
        if lookup.polymorphic:
            # The foreign keys sit on the per-target columns; deleting a target looks them up.
            for target in lookup.targets:
                column = target_column(lookup, target.entity_set)
                statements.append(
                    f"CREATE INDEX {ident(name + '__' + column)} ON {ident(name)} ({ident(column)})"
                )
    return statements


_ON_DELETE = {"restrict": "RESTRICT", "remove_link": "SET NULL", "cascade": "CASCADE"}


def _change_log_ddl() -> list[str]:
    return [
        f"DROP TABLE IF EXISTS {CHANGES_TABLE}",
        "CREATE SEQUENCE IF NOT EXISTS ts_change",
        f"CREATE TABLE {CHANGES_TABLE} (\n"
        "  entity_set text NOT NULL,\n  record_id uuid NOT NULL,\n  seq bigint NOT NULL,\n"
        "  deleted boolean NOT NULL,\n  PRIMARY KEY (entity_set, record_id)\n)",
        f"CREATE INDEX {ident(CHANGES_TABLE + '__seq')} ON {CHANGES_TABLE} (seq)",
        f"CREATE INDEX {ident(CHANGES_TABLE + '__set')} ON {CHANGES_TABLE} "
        "(entity_set, deleted, seq)",
    ]


def _tracking_ddl(spec: TableSpec) -> list[str]:
    """A trigger noting each committed change of a row of ``spec`` in the change log.

    It is a deferred constraint trigger, so it runs when the transaction commits: the
    change numbers are drawn under a lock held until the commit is done, and so follow
    the order in which transactions commit, whatever order they began or stamped their
    rows in. A row stamped long before its transaction commits (a long posting, a
    plug-in) gets a number after every change a reader has already been given."""
    name = spec.entity.entity_set
    key = ident(spec.entity.key)
    function = ident(f"ts_track__{name}")
    note = (
        f"INSERT INTO {CHANGES_TABLE} (entity_set, record_id, seq, deleted) "
        "VALUES ({literal}, {row}." + key + ", nextval('ts_change'), {deleted}) "
        "ON CONFLICT (entity_set, record_id) DO UPDATE "
        "SET seq = EXCLUDED.seq, deleted = EXCLUDED.deleted;"
    )
    table = literal(name)
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        f"    PERFORM pg_advisory_xact_lock({_COMMIT_ORDER_LOCK});\n"
        "    IF TG_OP = 'DELETE' THEN\n"
        f"        {note.format(literal=table, row='OLD', deleted='true')}\n"
        "    ELSE\n"
        f"        {note.format(literal=table, row='NEW', deleted='false')}\n"
        "    END IF;\n"
        "    RETURN NULL;\n"
        "END\n$$",
        f"CREATE CONSTRAINT TRIGGER {ident(name + '__track')} "
        f"AFTER INSERT OR UPDATE OR DELETE ON {ident(name)} "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {function}()",
    ]


def _foreign_keys(spec: TableSpec) -> list[str]:
    entity = spec.entity
    statements = []
    for lookup in entity.lookups.values():
        if not lookup.writable:
            continue
        for target in lookup.targets:
            column = (
                target_column(lookup, target.entity_set)
                if lookup.polymorphic
                else lookup.value_field
            )
            target_key = f"{target.logical_name}id"
            statements.append(
                f"ALTER TABLE {ident(entity.entity_set)} ADD CONSTRAINT "
                f"{ident('fk__' + column)} FOREIGN KEY ({ident(column)}) "
                f"REFERENCES {ident(target.entity_set)} ({ident(target_key)}) "
                f"ON DELETE {_ON_DELETE[lookup.on_delete]}"
            )
    return statements


def ddl(specs: Sequence[TableSpec]) -> list[str]:
    """Every statement that creates the tables of ``specs`` (not the preamble)."""
    statements: list[str] = []
    tracked = [spec for spec in specs if spec.change_log]
    if tracked:
        statements.extend(_change_log_ddl())
    for spec in specs:
        statements.extend(_table_ddl(spec))
    for spec in specs:
        statements.extend(_foreign_keys(spec))
    for spec in tracked:
        statements.extend(_tracking_ddl(spec))
    for spec in specs:
        statements.extend(spec.triggers)
    return statements


def _fingerprint(statements: Iterable[str]) -> str:
    return hashlib.sha256("\n".join([_PREAMBLE, *statements]).encode()).hexdigest()


async def ensure_database(dsn: str) -> None:
    """Create the database ``dsn`` names unless it exists (through ``postgres`` on that server)."""
    name = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await admin.execute(f"CREATE DATABASE {ident(name)}")
                log.info("emulator_database_created", database=name)
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await admin.close()


async def ensure_schema(conn: asyncpg.Connection, specs: Sequence[TableSpec]) -> bool:
    """Create the tables of ``specs`` unless the same ones exist; True when (re)created."""
    statements = ddl(specs)
    fingerprint = _fingerprint(statements)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
        await conn.execute(_PREAMBLE)
        current = await meta_get(conn, _FINGERPRINT_KEY)
        if current == fingerprint:
            return False
        for spec in reversed(specs):
            await conn.execute(f"DROP TABLE IF EXISTS {spec.table} CASCADE")
        for statement in statements:
            await conn.execute(statement)
        await conn.execute(f"TRUNCATE {META_TABLE}, {SERIES_TABLE}")
        await meta_set(conn, _FINGERPRINT_KEY, fingerprint)
    log.info("emulator_schema_created", tables=len(specs))
    return True


async def truncate_all(conn: asyncpg.Connection, specs: Sequence[TableSpec]) -> None:
    tables = ", ".join(spec.table for spec in specs)
    if any(spec.change_log for spec in specs):
        tables += f", {CHANGES_TABLE}"
    await conn.execute(f"TRUNCATE {tables} CASCADE")
    await conn.execute(f"UPDATE {SERIES_TABLE} SET last_no = 0")


async def meta_get(db: Executor, key: str) -> str | None:
    value: str | None = await db.fetchval(f"SELECT value FROM {META_TABLE} WHERE key = $1", key)
    return value


async def meta_set(db: Executor, key: str, value: str) -> None:
    await db.execute(
        f"INSERT INTO {META_TABLE} (key, value) VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        key,
        value,
    )
