"""How BC's entity sets are stored, and the number series that number new records."""

from __future__ import annotations

from types import MappingProxyType

from tablesync.core.catalog import entities
from tablesync.emulators.common.sql import TableSpec

__all__ = ["API_ROOT", "BC_SPECS", "LCY_CODE", "NUMBER_SERIES", "root_of"]

API_ROOT = "/BC/api"
LCY_CODE = "USD"
"""CRONUS USA's local currency: a blank currency code, or this one, means it."""

BC_SPECS = tuple(
    TableSpec(
        entity=e,
        version_column="_version",
        precision="milliseconds",
        case_insensitive=False,
        namespace="Microsoft.NAV",
        # A currency's code is its primary key in BC.
        unique_columns=("code",) if e.entity_set == "currencies" else (),
    )
    for e in entities("bc")
)

NUMBER_SERIES = MappingProxyType(
    {
        "customers": ("C", 5),
        "vendors": ("V", 5),
        "contacts": ("CT", 6),
        "salespeople": ("SP", 5),
    }
)
"""Entity set → (prefix, digits): ``C00001``, ``V00001``, ``CT000001``, ``SP00001``."""


def root_of(api_route: str | None) -> str:
    return f"{API_ROOT}/{api_route or 'v2.0'}"
