"""Opening a connector for a side from its settings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import httpx

from tablesync.adapters.odata.bc import BcApi
from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.adapters.odata.entities import SpecSource
from tablesync.adapters.odata.stats import ApiStats
from tablesync.core.events import Side
from tablesync.core.metadata import TableInfo
from tablesync.ports.api import SideApi
from tablesync.settings import ApiSettings

__all__ = ["CountingSideApi", "open_api"]


class CountingSideApi(SideApi, Protocol):
    """A ``SideApi`` that also counts its traffic, for the runtime's metrics,
    and answers whether the API answers, for readiness."""

    @property
    def stats(self) -> ApiStats: ...

    async def probe(self) -> None: ...

    def use_tables(self, tables: Iterable[TableInfo]) -> None: ...


async def open_api(
    side: Side,
    settings: ApiSettings,
    *,
    specs: SpecSource | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CountingSideApi:
    """A connector for ``side``, ready to use: for BC the company is already resolved,
    so a wrong ``company_name`` or refused credentials fail here rather than mid-sync."""
    if side == "bc":
        bc = BcApi(settings, specs=specs, transport=transport)
        try:
            await bc.company_id()
        except BaseException:
            await bc.aclose()
            raise
        return bc
    return DataverseApi(settings, specs=specs, transport=transport)
