"""Mappings in memory, as ``adapters.postgres.mappings`` keeps them: each
mapping's part of the document as loaded, overridden by the columns an
operator may change, and every read rebuilt and validated by
``core.mapping_load``."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime
from typing import Any

from tablesync.adapters.memory.database import MappingRow, MemoryStore, jsonb
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

__all__ = ["MemoryMappings"]


@functools.cache
def _tables() -> TableInfoSource:
    return catalog_tables()


class MemoryMappings(MemoryStore):
    _described: TableInfoSource | None = None

    def use_tables(self, tables: TableInfoSource) -> None:
        """Validate against ``tables`` from now on, as ``MappingStore.use_tables``."""
        self._described = tables

    def _source(self) -> TableInfoSource:
        return self._described if self._described is not None else _tables()

    async def replace_all(self, document: dict[str, Any]) -> MappingSet:
        await self._pause("mappings.replace_all")
        mapping_set = build_mappings(document, self._source())
        raw = document["mappings"]
        now = self._db.now()
        self._db.t.mappings = {
            m.name: MappingRow(
                position=i,
                definition=jsonb(raw[m.name]),
                direction=m.direction,
                sync_only_coupled=m.sync_only_coupled,
                table_filter=_text(m.table_filter),
                integration_table_filter=_text(m.integration_table_filter),
                loaded_at=now,
                updated_at=now,
            )
            for i, m in enumerate(mapping_set.mappings)
        }
        return mapping_set

    async def load(self) -> MappingSet:
        await self._pause("mappings.load")
        return build_mappings(self._document(), self._source())

    async def outside_catalog(self) -> list[tuple[Side, str]]:
        """The tables the mappings in force name that the built-in catalog lacks."""
        return outside_catalog(self._document())

    async def version(self) -> datetime | None:
        await self._pause("mappings.version")
        return max((r.updated_at for r in self._db.t.mappings.values()), default=None)

    async def change(
        self,
        name: str,
        *,
        direction: str | None = None,
        sync_only_coupled: bool | None = None,
        table_filter: str | None = None,
        integration_table_filter: str | None = None,
    ) -> TableMapping:
        await self._pause("mappings.change")
        changed = change_mapping(
            self._document(),
            name,
            self._source(),
            direction=direction,
            sync_only_coupled=sync_only_coupled,
            table_filter=table_filter,
            integration_table_filter=integration_table_filter,
        )
        rows = self._db.t.mappings
        row = rows[name]
        rows[name] = replace(
            row,
            direction=changed.direction,
            sync_only_coupled=changed.sync_only_coupled,
            table_filter=_text(changed.table_filter),
            integration_table_filter=_text(changed.integration_table_filter),
            updated_at=self._db.now(),
        )
        return changed

    async def set_only_coupled(self, names: list[str], value: bool) -> None:
        await self._pause("mappings.set_only_coupled")
        rows = self._db.t.mappings
        now = self._db.now()
        for name in names:
            row = rows.get(name)
            if row is not None:
                rows[name] = replace(row, sync_only_coupled=value, updated_at=now)

    def _document(self) -> dict[str, Any]:
        rows = sorted(self._db.t.mappings.items(), key=lambda nr: nr[1].position)
        if not rows:
            raise LookupError("no mappings are loaded: run `tablesync mappings load` first")
        mappings: dict[str, Any] = {}
        for name, r in rows:
            body = jsonb(r.definition)
            body["direction"] = r.direction
            body["sync_only_coupled"] = r.sync_only_coupled
            body["table_filter"] = r.table_filter
            body["integration_table_filter"] = r.integration_table_filter
            mappings[name] = body
        return {"mappings": mappings}


def _text(expr: filters.Expr | None) -> str | None:
    return filters.to_odata(expr) if expr is not None else None
