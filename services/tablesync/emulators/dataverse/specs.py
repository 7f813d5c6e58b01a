"""How Dataverse's tables are stored: ``versionnumber`` rows, stamps to the second,
text compared without regard to case."""

from __future__ import annotations

from tablesync.core.catalog import entities
from tablesync.emulators.common.sql import TableSpec

__all__ = [
    "API_ROOT",
    "BASE_CURRENCY_SQL",
    "DATAVERSE_SPECS",
    "INTEGRATION_USER_NAME",
    "spec_for",
]

API_ROOT = "/api/data/v9.2"
INTEGRATION_USER_NAME = ("tablesync", "integration")
"""First and last name of the application user the bearer token stands for."""

BASE_CURRENCY_SQL = (
    'SELECT "transactioncurrencyid" FROM "transactioncurrencies" '
    'WHERE "exchangerate" = 1 ORDER BY "createdon", "transactioncurrencyid" LIMIT 1'
)
"""The organisation's base currency: the first currency created at rate 1.0."""

_EXTRA_INDEXES = {
    # Serves BASE_CURRENCY_SQL, which every create of a row with money fields runs.
    "transactioncurrencies": ('("createdon", "transactioncurrencyid") WHERE "exchangerate" = 1',),
}

DATAVERSE_SPECS = tuple(
    TableSpec(
        entity=e,
        version_column="versionnumber",
        precision="second",
        case_insensitive=True,
        namespace="Microsoft.Dynamics.CRM",
        extra_indexes=_EXTRA_INDEXES.get(e.entity_set, ()),
        change_log=True,
    )
    for e in entities("dataverse")
)

_BY_SET = {s.entity.entity_set: s for s in DATAVERSE_SPECS}


def spec_for(entity_set: str) -> TableSpec | None:
    return _BY_SET.get(entity_set)
