"""Mappings in PostgreSQL: loaded from a document, changed by operators, read by services.

Each mapping's part of the document is stored as loaded; the columns an
operator may change (direction, filters, sync-only-coupled) override it, and
every read rebuilds and validates the whole set, so an invalid change is
refused before it is stored."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from tablesync.core import filters
from tablesync.core.described import outside_catalog
from tablesync.core.events import Side
from tablesync.core.mapping_load import (
    TableInfoSource,
    build_mappings,
    catalog_tables,
    change_mapping,
)
from tablesync.core.mappings import MappingSet, TableMapping

__all__ = ["MappingStore"]


class MappingStore:
    def __init__(self, pool: Any, tables: TableInfoSource | None = None) -> None:
        self._pool = pool
        self._tables = tables if tables is not None else catalog_tables()

    def use_tables(self, tables: TableInfoSource) -> None:
        """Validate against ``tables`` from now on (the services' metadata, once read)."""
        self._tables = tables

    async def replace_all(self, document: dict[str, Any]) -> MappingSet:
        """Validates ``document`` and makes it the mappings in force."""
        mapping_set = build_mappings(document, self._tables)
        raw = document["mappings"]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM mappings")
            await conn.executemany(
                """
                INSERT INTO mappings (name, position, definition, direction, sync_only_coupled,
                                      table_filter, integration_table_filter)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """,
                [
                    (
                        m.name,
                        i,
                        raw[m.name],
                        m.direction,
                        m.sync_only_coupled,
                        _text(m.table_filter),
                        _text(m.integration_table_filter),
                    )
                    for i, m in enumerate(mapping_set.mappings)
                ],
            )
        return mapping_set

    async def load(self) -> MappingSet:
        return build_mappings(await self._document(), self._tables)

    async def outside_catalog(self) -> list[tuple[Side, str]]:
        """The tables the mappings in force name that the built-in catalog lacks."""
        return outside_catalog(await self._document())

    async def version(self) -> datetime | None:
        value: datetime | None = await self._pool.fetchval("SELECT max(updated_at) FROM mappings")
        return value

    async def change(
        self,
        name: str,
        *,
        direction: str | None = None,
        sync_only_coupled: bool | None = None,
        table_filter: str | None = None,
        integration_table_filter: str | None = None,
    ) -> TableMapping:
        """Changes one mapping; an empty filter text clears the filter."""
        changed = change_mapping(
            await self._document(),
            name,
            self._tables,
            direction=direction,
            sync_only_coupled=sync_only_coupled,
            table_filter=table_filter,
            integration_table_filter=integration_table_filter,
        )
        await self._pool.execute(
            """
            UPDATE mappings SET direction = $2, sync_only_coupled = $3, table_filter = $4,
                   integration_table_filter = $5, updated_at = now()
            WHERE name = $1
            """,
            name,
            changed.direction,
            changed.sync_only_coupled,
            _text(changed.table_filter),
            _text(changed.integration_table_filter),
        )
        return changed

    async def set_only_coupled(self, names: list[str], value: bool) -> None:
        await self._pool.execute(
            "UPDATE mappings SET sync_only_coupled = $2, updated_at = now() "
            "WHERE name = ANY($1::text[])",
            names,
            value,
        )

    async def _document(self) -> dict[str, Any]:
        rows = await self._pool.fetch("SELECT * FROM mappings ORDER BY position")
        if not rows:
            raise LookupError("no mappings are loaded: run `tablesync mappings load` first")
        mappings: dict[str, Any] = {}
        for r in rows:
            body = copy.deepcopy(r["definition"])
            body["direction"] = r["direction"]
            body["sync_only_coupled"] = r["sync_only_coupled"]
            body["table_filter"] = r["table_filter"]
            body["integration_table_filter"] = r["integration_table_filter"]
            mappings[r["name"]] = body
        return {"mappings": mappings}


def _text(expr: filters.Expr | None) -> str | None:
    return filters.to_odata(expr) if expr is not None else None
