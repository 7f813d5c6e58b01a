"""The tables both services describe, read once for a process: what it validates mappings
against and where its connectors find custom tables and pages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from tablesync.adapters.odata.bc import BcApi
from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.core import catalog
from tablesync.core.described import described_tables
from tablesync.core.mapping_load import TableInfoSource
from tablesync.core.metadata import TableInfo, with_navigations
from tablesync.settings import Settings

__all__ = ["describe_sides", "learn_tables", "read_tables"]


async def describe_sides(
    bc: BcApi, dataverse: DataverseApi, *, bc_routes: Sequence[str] = (), refresh: bool = False
) -> list[TableInfo]:
    """Every BC set of the standard route, the catalog's custom routes and ``bc_routes``;
    every custom Dataverse table and the catalog's Dataverse tables, with their columns
    (a catalog table's custom columns among them) and their lookups' navigation
    properties."""
    found = list(await bc.describe(routes=bc_routes, refresh=refresh))
    listed = await dataverse.describe(refresh=refresh)
    builtin = {e.entity_set for e in catalog.entities("dataverse")}
    wanted = [t.entity_set for t in listed if t.custom or t.entity_set in builtin]
    for detailed in await asyncio.gather(
        *(dataverse.describe(name, refresh=refresh) for name in wanted)
    ):
        found.extend(detailed)
    navigations = await dataverse.lookup_navigations()
    return [with_navigations(t, navigations) for t in found]


async def read_tables(settings: Settings, *, bc_routes: Sequence[str] = ()) -> list[TableInfo]:
    """``describe_sides`` on connectors of their own, for metadata only (BC's company is
    never looked up); the routes are ``TABLESYNC_BC__API_ROUTES`` and ``bc_routes``."""
    routes = tuple(dict.fromkeys((*settings.bc.api_routes, *bc_routes)))
    bc = BcApi(settings.bc)
    try:
        dataverse = DataverseApi(settings.dataverse)
        try:
            return await describe_sides(bc, dataverse, bc_routes=routes)
        finally:
            await dataverse.aclose()
    finally:
        await bc.aclose()


async def learn_tables(
    bc: BcApi, dataverse: DataverseApi, *, bc_routes: Sequence[str] = (), refresh: bool = False
) -> TableInfoSource:
    """The tables to validate mappings against; both connectors find the custom sets
    from now on."""
    described = await describe_sides(bc, dataverse, bc_routes=bc_routes, refresh=refresh)
    bc.use_tables(described)
    dataverse.use_tables(described)
    structlog.get_logger().info(
        "tables_described",
        bc=sum(1 for t in described if t.side == "bc"),
        dataverse=sum(1 for t in described if t.side == "dataverse"),
        custom=sorted(f"{t.side}:{t.entity_set}" for t in described if t.custom),
    )
    return described_tables(described)
