"""The data and mappings the benches sync.

BC is loaded with ``seed_synthetic`` (N rows in every table, COPY) and then
trimmed so that every record it holds is in scope of the bench's mappings:

- every customer is unblocked (the CUSTOMER table filter ``blocked eq ' '``
  would leave about one in ten out, and their contacts waiting forever on a
  parent that never couples);
- the N synthetic currencies (codes of seven characters, longer than
  Dataverse's five) are replaced by five ISO currencies, and the one customer
  in ten that has a foreign currency points at one of them.

The seeded rows of both sides are made a day old, as existing data is: fresh
stamps would fall inside the few seconds capture looks back when it starts, and
it would publish every row as a change before the full sync begins.

Dataverse gets a small synthetic set: its users become BC salespeople
(SALESPEOPLE runs Dataverse -> BC), its base currency is the exchange rate
reference, its accounts carry numbers no BC customer has (so match-based
coupling runs its queries and finds nothing, as on a fresh Dataverse)."""

from __future__ import annotations

import copy
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

import asyncpg
import yaml

from bench.deploy import Databases, Infra
from tablesync.adapters.mapping_file import default_mapping_file
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.emulators.bc.specs import BC_SPECS
from tablesync.emulators.common.sql import TableSpec, ident
from tablesync.emulators.dataverse.specs import DATAVERSE_SPECS
from tablesync.emulators.seed import seed_synthetic

__all__ = [
    "CURRENCIES",
    "DATAVERSE_ROWS",
    "DEFAULT_MAPPINGS",
    "Templates",
    "bench_mappings",
    "make_templates",
    "seed_bc",
    "seed_dataverse",
]

DEFAULT_MAPPINGS = default_mapping_file()
_NAMESPACE = UUID("8f0b1c52-6a4e-4d37-9c1e-62656e636800")
_CURRENCIES = (
    ("EUR", "Euro", "€"),
    ("GBP", "Pound Sterling", "£"),
    ("CAD", "Canadian dollar", "$"),
    ("DKK", "Danish krone", "kr"),
    ("JPY", "Japanese yen", "¥"),
)
CURRENCIES = len(_CURRENCIES)
DATAVERSE_ROWS = 10
"""Dataverse users (each becomes a BC salesperson), currencies, accounts, contacts."""


def bench_mappings(names: list[str], directions: dict[str, str] | None = None) -> dict[str, Any]:
    """``mappings/default.yaml`` narrowed to ``names``: lookups and dependencies
    on the mappings left out are dropped, and ``directions`` overrides the
    direction of the mappings it names (dropping the fields that only go the
    other way). Validated like ``mappings load`` does."""
    document = yaml.safe_load(DEFAULT_MAPPINGS.read_text())
    kept: dict[str, Any] = {}
    for name in names:
        mapping = copy.deepcopy(document["mappings"][name])
        if directions and name in directions:
            mapping["direction"] = directions[name]
        if "depends_on" in mapping:
            mapping["depends_on"] = [d for d in mapping["depends_on"] if d in names]
        direction = mapping["direction"]
        fields = []
        for field in mapping["fields"]:
            # A field that only carries values the other way has no place in a
            # mapping narrowed to one direction.
            if direction != "bidirectional" and _field_direction(field, direction) not in (
                direction,
                "bidirectional",
            ):
                continue
            lookup = field.get("lookup")
            if lookup is not None:
                targets = [lookup] if isinstance(lookup, str) else list(lookup)
                targets = [t for t in targets if t in names]
                if not targets:
                    continue
                field["lookup"] = targets[0] if len(targets) == 1 else targets
                if direction != "bidirectional" and "clear_on_failure" in field:
                    field["clear_on_failure"] = [
                        d for d in field["clear_on_failure"] if d == direction
                    ]
                    if not field["clear_on_failure"]:
                        del field["clear_on_failure"]
            fields.append(field)
        mapping["fields"] = fields
        kept[name] = mapping
    narrowed = {"mappings": kept}
    build_mappings(narrowed, catalog_tables())
    return narrowed


def _field_direction(field: dict[str, Any], default: str) -> str:
    if "direction" in field:
        return str(field["direction"])
    # A constant fills the side it names: a BC constant only goes Dataverse -> BC.
    if "constant" in field:
        return "to_integration" if "dataverse" in field else "from_integration"
    return default


def _currency_id(code: str) -> UUID:
    return uuid5(_NAMESPACE, code)


async def seed_bc(dsn: str, n: int) -> dict[str, int]:
    """N customers, N person contacts of those customers, five currencies."""
    report = await seed_synthetic("bc", dsn, n, wipe=True)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("UPDATE customers SET \"blocked\" = ' ' WHERE \"blocked\" <> ' '")
            await conn.execute("DELETE FROM currencies")
            await conn.copy_records_to_table(
                "currencies",
                records=[
                    (_currency_id(code), code, name, symbol, "2:2", Decimal("0.01"))
                    for code, name, symbol in _CURRENCIES
                ],
                columns=[
                    "id",
                    "code",
                    "displayName",
                    "symbol",
                    "amountDecimalPlaces",
                    "amountRoundingPrecision",
                ],
            )
            # hashtext spreads the foreign-currency customers over the five.
            await conn.execute(
                """
                UPDATE customers SET "currencyId" = c.id, "currencyCode" = c.code
                FROM unnest($1::int[], $2::uuid[], $3::text[]) AS c(k, id, code)
                WHERE customers."currencyCode" <> ''
                  AND abs(hashtext(customers."number")) % $4 = c.k
                """,
                list(range(len(_CURRENCIES))),
                [_currency_id(code) for code, _, _ in _CURRENCIES],
                [code for code, _, _ in _CURRENCIES],
                len(_CURRENCIES),
            )
            await _age(conn, BC_SPECS)
        await conn.execute("ANALYZE customers")
        await conn.execute("ANALYZE currencies")
        rows = {
            "customers": await conn.fetchval("SELECT count(*) FROM customers"),
            "contacts": await conn.fetchval("SELECT count(*) FROM contacts"),
            "currencies": await conn.fetchval("SELECT count(*) FROM currencies"),
            "foreign_currency_customers": await conn.fetchval(
                "SELECT count(*) FROM customers WHERE \"currencyCode\" <> ''"
            ),
        }
    finally:
        await conn.close()
    assert report.rows["customers"] == n
    return rows


async def seed_dataverse(dsn: str, n: int) -> dict[str, int]:
    report = await seed_synthetic("dataverse", dsn, n, wipe=True)
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await _age(conn, DATAVERSE_SPECS)
    finally:
        await conn.close()
    return dict(report.rows)


async def _age(conn: asyncpg.Connection, specs: tuple[TableSpec, ...]) -> None:
    for spec in specs:
        stamps = [spec.entity.modified_field]
        if spec.entity.created_field:
            stamps.append(spec.entity.created_field)
        assignments = ", ".join(f"{ident(c)} = {ident(c)} - interval '1 day'" for c in stamps)
        await conn.execute(f"UPDATE {spec.table} SET {assignments}")


@dataclass(frozen=True, slots=True)
class Templates:
    """Seeded databases every run of a bench copies (CREATE DATABASE … TEMPLATE),
    so that a run starts from the same data without seeding again."""

    dbs: Databases
    bc: str
    dataverse: str
    seeded: dict[str, int]
    seed_seconds: float


async def make_templates(infra: Infra, records: int, tag: str) -> Templates:
    """BC with ``records`` customers and contacts, Dataverse with its small set;
    the caller drops them (``templates.dbs.drop_all()``)."""
    dbs = Databases(infra, f"{tag}{uuid.uuid4().hex[:8]}_tpl")
    started = time.monotonic()
    try:
        bc = await dbs.create("bc")
        dv = await dbs.create("dv")
        seeded = await seed_bc(bc, records)
        await seed_dataverse(dv, DATAVERSE_ROWS)
    except BaseException:
        await dbs.drop_all()
        raise
    return Templates(
        dbs,
        bc.rsplit("/", 1)[1],
        dv.rsplit("/", 1)[1],
        seeded,
        round(time.monotonic() - started, 1),
    )
