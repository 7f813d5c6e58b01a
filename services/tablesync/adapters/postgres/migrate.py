"""Ordered SQL migrations, each applied once: ``migrations/`` beside this module,
package data (found with ``importlib.resources``, so a wheel carries them).

A migration is ``<NNN>_<name>.sql``. Applied ones are recorded with a checksum
in ``schema_migrations``; a recorded migration whose file changed since is
refused rather than silently diverging. An advisory lock serialises concurrent
runs, so every service may call ``migrate`` at start."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

import asyncpg
import structlog

from tablesync.errors import ConfigError

__all__ = ["Migration", "default_migrations_dir", "load_migrations", "migrate"]

_NAME = re.compile(r"^(?P<version>\d{3,})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7461626C6573  # "tables": any constant unique to this purpose

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_migrations_dir() -> Traversable:
    return files("tablesync.adapters.postgres") / "migrations"


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    try:
        listed = sorted(directory.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise ConfigError(f"cannot list the migrations in {directory}: {exc}") from exc
    found: list[Migration] = []
    for path in listed:
        if not path.name.endswith(".sql"):
            continue
        match = _NAME.match(path.name)
        if match is None:
            raise ConfigError(f"{path}: migrations are named NNN_lower_case_name.sql")
        found.append(Migration(int(match["version"]), match["name"], path.read_text()))
    if not found:
        # A package built without its data would otherwise migrate nothing, silently.
        raise ConfigError(f"no migrations found in {directory}")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ConfigError(f"{directory}: two migrations share a version number")
    return found


async def migrate(dsn: str, directory: Traversable | None = None) -> list[Migration]:
    """Applies every migration not applied yet; returns the ones it applied."""
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply_pending(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    applied = {r["version"]: r for r in rows}
    done: list[Migration] = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version]["checksum"] != m.checksum:
                raise ConfigError(
                    f"migration {m.version:03d}_{m.name} changed after it was applied; "
                    "add a new migration instead of editing an applied one"
                )
            continue
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                m.version,
                m.name,
                m.checksum,
            )
        log.info("migration_applied", version=m.version, name=m.name)
        done.append(m)
    return done
