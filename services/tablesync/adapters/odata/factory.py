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
from tablesync.errors import ConfigError
from tablesync.ports.api import SideApi
from tablesync.settings import ApiSettings

__all__ = ["CountingSideApi", "open_api", "open_bc_companies"]


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
    company: str | None = None,
) -> CountingSideApi:
    """A connector for ``side``, ready to use: for BC the company is already resolved,
    so a wrong ``company_name`` or refused credentials fail here rather than mid-sync.
    BC works in ``company`` (an id or a name) when given, else in the one company the
    settings name; settings that list several need ``company`` (``open_bc_companies``
    opens them all)."""
    if side == "bc":
        if company is None:
            refs = settings.company_refs()
            if len(refs) > 1:
                raise ConfigError(
                    f"bc: TABLESYNC_BC__COMPANIES names {len(refs)} companies; "
                    "a connector works in one of them"
                )
            company = refs[0] if settings.companies else None
        bc = BcApi(settings, specs=specs, transport=transport, company=company)
        try:
            await bc.company_id()
        except BaseException:
            await bc.aclose()
            raise
        return bc
    return DataverseApi(settings, specs=specs, transport=transport)


async def open_bc_companies(
    settings: ApiSettings,
    *,
    specs: SpecSource | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[BcApi]:
    """One BC connector per company the settings name, in their order, each already
    resolved, all over one HTTP client (the first owns it: close that one last)."""
    first_ref, *rest = settings.company_refs()
    # Without TABLESYNC_BC__COMPANIES the connector reads company_id/company_name itself.
    company = first_ref if settings.companies else None
    first = BcApi(settings, specs=specs, transport=transport, company=company)
    opened = [first, *(first.in_company(ref) for ref in rest if ref is not None)]
    try:
        for api in opened:
            await api.company_id()
    except BaseException:
        await first.aclose()
        raise
    return opened
