"""Demo and synthetic data, loaded straight into an emulator's database with COPY.

``--demo`` is a small CRONUS-like set with consistent references:

- BC: currencies (EUR, GBP, CAD, DKK, JPY), six units of measure, five payment terms,
  four shipment methods, thirty items (each in a base unit of measure), three
  salespeople, ten customers (some in a foreign currency, three with a salesperson code,
  one blocked, each with payment terms and a shipment method), five vendors (with
  payment terms), fifteen person contacts whose ``companyNumber`` names a customer or
  vendor.
- Dataverse: five licensed, enabled users, one disabled user and the integration user;
  the base currency USD (exchange rate 1.0); the unit group "Default Unit" with its base
  unit "Primary Unit", and one product in it that carries the number of BC item
  ``1896-S`` (for match-based coupling); three customer accounts, one of which carries
  the account number of BC customer ``C00001`` (likewise); four contacts.

Salespeople: BC numbers them ``SP00001``, ``SP00002``… The three BC salespeople carry the
e-mail of a Dataverse user, so the sync couples them by that match; it creates the other
users' salespeople, numbered from ``SP00004`` on.

``--synthetic N`` loads N rows into every table with valid references (BC salespeople
excepted, as above), fast enough for 100,000 rows per table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

import asyncpg
import structlog

from tablesync.core.catalog import EMPTY_GUID
from tablesync.core.events import Side
from tablesync.emulators.bc.service import BcService
from tablesync.emulators.bc.specs import NUMBER_SERIES, bc_specs
from tablesync.emulators.common.custom import Customizations
from tablesync.emulators.common.runtime import Tuning
from tablesync.emulators.common.schema import (
    SERIES_TABLE,
    ensure_database,
    ensure_schema,
    truncate_all,
)
from tablesync.emulators.common.sql import TableSpec, target_column
from tablesync.emulators.dataverse.service import DataverseService
from tablesync.emulators.dataverse.specs import DATAVERSE_SPECS, dataverse_specs

__all__ = [
    "DEMO_PRODUCTS",
    "DEMO_USERS",
    "SeedReport",
    "demo_user_id",
    "reset",
    "salesperson_codes",
    "seed_demo",
    "seed_synthetic",
]

log = structlog.get_logger()

_NAMESPACE = UUID("5d1a3c1e-7f0b-4c1d-9a34-2b8e0f6c4a10")
Row = dict[str, object]


@dataclass(frozen=True, slots=True)
class SeedReport:
    side: Side
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _id(kind: str, name: str) -> UUID:
    return uuid5(_NAMESPACE, f"{kind}:{name}")


# ---------------------------------------------------------------- demo people

DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("Alicia", "Thomber", "Sales Manager"),
    ("Annette", "Hill", "Account Manager"),
    ("Bart", "Duncan", "Account Manager"),
    ("Jim", "Glynn", "Sales Representative"),
    ("Linda", "Martin", "Sales Representative"),
)
"""Licensed, enabled people: (first name, last name, title)."""
_DISABLED_USER = ("Peter", "Saddow", "Former Sales Representative")


def demo_user_id(first: str, last: str) -> UUID:
    return _id("systemuser", f"{first} {last}")


def salesperson_codes() -> dict[UUID, str]:
    """The code BC gives each demo user's salesperson when created in the order of ids."""
    ids = sorted((demo_user_id(f, n) for f, n, _ in DEMO_USERS), key=str)
    prefix, width = NUMBER_SERIES["salespeople"]
    return {user: f"{prefix}{i:0{width}d}" for i, user in enumerate(ids, start=1)}


# ---------------------------------------------------------------- plumbing


async def _open(
    side: Side, dsn: str, custom: Customizations | None
) -> tuple[Any, BcService | DataverseService]:
    """The database with the tables the emulator serving ``custom`` has: seeding with
    other tables than the emulator's would make its next start recreate them all."""
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    tuning = Tuning(max_page_size=5000)
    declared = custom or Customizations.none()
    service: BcService | DataverseService
    if side == "bc":
        service = BcService(tuning, bc_specs(declared))
    else:
        service = DataverseService(tuning, dataverse_specs(declared), declared)
    await ensure_schema(conn, service.specs)
    # prepare() makes the baseline rows: the BC company, the Dataverse integration user.
    await service.prepare(conn)
    return conn, service


async def _copy(conn: Any, table: str, rows: Sequence[Row]) -> int:
    if not rows:
        return 0
    columns = list(rows[0])
    records = [tuple(row[c] for c in columns) for row in rows]
    await conn.copy_records_to_table(table, records=records, columns=columns)
    return len(records)


async def _copy_tuples(
    conn: Any, table: str, columns: Sequence[str], records: Sequence[tuple[object, ...]]
) -> int:
    await conn.copy_records_to_table(table, records=records, columns=list(columns))
    return len(records)


async def _has_data(conn: Any, side: Side, specs: Sequence[TableSpec]) -> bool:
    baseline = {"systemusers": 1} if side == "dataverse" else {}
    for spec in specs:
        count = await conn.fetchval(f"SELECT count(*) FROM {spec.table}")
        if count > baseline.get(spec.entity.entity_set, 0):
            return True
    return False


async def _begin(
    side: Side, dsn: str, wipe: bool, custom: Customizations | None
) -> tuple[Any, BcService | DataverseService]:
    conn, service = await _open(side, dsn, custom)
    if wipe:
        await truncate_all(conn, service.specs)
        await service.prepare(conn)
    elif await _has_data(conn, side, service.specs):
        await conn.close()
        raise ValueError(f"the {side} emulator database already has data; seed with --reset")
    return conn, service


async def _set_series(conn: Any, counts: dict[str, int]) -> None:
    for entity_set, last in counts.items():
        await conn.execute(
            f"UPDATE {SERIES_TABLE} SET last_no = $2 WHERE entity_set = $1", entity_set, last
        )


async def reset(side: Side, dsn: str, *, custom: Customizations | None = None) -> None:
    """Empty every table of ``side`` (and of ``custom``); the baseline rows come back."""
    conn, service = await _open(side, dsn, custom)
    try:
        await truncate_all(conn, service.specs)
        await service.prepare(conn)
    finally:
        await conn.close()


# ---------------------------------------------------------------- BC demo

_BC_CURRENCIES = (
    ("EUR", "Euro", "€", "2:2", "0.01"),
    ("GBP", "Pound Sterling", "£", "2:2", "0.01"),
    ("CAD", "Canadian dollar", "$", "2:2", "0.01"),
    ("DKK", "Danish krone", "kr", "2:2", "0.01"),
    ("JPY", "Japanese yen", "¥", "0:0", "1"),
)

# (name, address, city, state, postal code, phone, currency, blocked)
_BC_CUSTOMERS = (
    ("Adatum Corporation", "192 Market Square", "Atlanta", "GA", "31772", "", "", " "),
    ("Trey Research", "153 Thomas Drive", "Chicago", "IL", "61236", "", "EUR", " "),
    ("School of Fine Art", "10 High Tower Green", "Miami", "FL", "37125", "", "GBP", " "),
    ("Alpine Ski House", "10 Deerfield Road", "Atlanta", "GA", "31772", "", "CAD", " "),
    ("Relecloud", "Cumberland Plaza 20", "Atlanta", "GA", "31772", "", "", " "),
    ("Coho Winery", "25 Water Way", "Seattle", "WA", "98101", "", "", " "),
    ("Litware, Inc.", "77 Eastern Avenue", "Denver", "CO", "80201", "", "EUR", " "),
    ("Fabrikam Residences", "100 Day Drive", "Houston", "TX", "77001", "", "", " "),
    ("Contoso Pharmaceuticals", "1 Microsoft Way", "Redmond", "WA", "98052", "", "", " "),
    ("Wide World Importers", "12 Harbour Road", "Boston", "MA", "02101", "", "", "All"),
)
_BC_VENDORS = (
    ("Fabrikam, Inc.", "51 Radcroft Road", "Atlanta", "GA", "31772", ""),
    ("First Up Consultants", "100 Day Drive", "Chicago", "IL", "61236", ""),
    ("Graphic Design Institute", "51 Radcroft Road", "Miami", "FL", "37125", "EUR"),
    ("Wide World Importers", "12 Harbour Road", "Boston", "MA", "02101", ""),
    ("Nod Publishers", "10 Great North Road", "Seattle", "WA", "98101", ""),
)
_BC_CONTACTS = (
    ("Robert Townes", 0),
    ("Jesse Homer", 1),
    ("Ian Deberry", 2),
    ("Kelly Focht", 3),
    ("Mark McArthur", 4),
    ("Marty Nelson", 5),
    ("Sara Davis", 6),
    ("Tom Wright", 7),
    ("Ellen Adams", 8),
    ("Ian Warren", 13),
    ("Kevin Wright", 10),
    ("Max Stevenson", 11),
    ("Jo Brown", 12),
    ("Helen Ray", 13),
    ("Rob Young", 14),
)


# (code, description, international standard code)
_BC_UNITS = (
    ("PCS", "Piece", "EA"),
    ("BOX", "Box", "BX"),
    ("SET", "Set", "SET"),
    ("PACK", "Pack", "PK"),
    ("HOUR", "Hour", "HUR"),
    ("KG", "Kilo", "KGM"),
)
# (code, description, due date formula, discount date formula, discount %)
_BC_PAYMENT_TERMS = (
    ("14 DAYS", "Net 14 days", "14D", "", "0"),
    ("30 DAYS", "Net 30 days", "30D", "", "0"),
    ("60 DAYS", "Net 60 days", "60D", "", "0"),
    ("1M(8D)", "1 Month/2% 8 days", "1M", "8D", "2"),
    ("COD", "Cash on delivery", "0D", "", "0"),
)
_BC_SHIPMENT_METHODS = (
    ("CIF", "Cost Insurance and Freight"),
    ("EXW", "Ex Warehouse"),
    ("FOB", "Free on Board"),
    ("PICKUP", "Pickup at Location"),
)
# (number, description, base unit, unit price, unit cost, inventory)
_BC_ITEMS = (
    ("1896-S", "ATHENS Desk", "PCS", "1000.8", "780.7", "12"),
    ("1900-S", "PARIS Guest Chair, black", "PCS", "192.8", "150.4", "40"),
    ("1906-S", "ATHENS Mobile Pedestal", "PCS", "281.4", "219.5", "8"),
    ("1908-S", "LONDON Swivel Chair, blue", "PCS", "190.1", "148.3", "25"),
    ("1920-S", "ANTWERP Conference Table", "PCS", "649.4", "506.6", "6"),
    ("1925-W", "Conference Bundle 1-6", "SET", "1229.5", "959.0", "0"),
    ("1928-S", "AMSTERDAM Lamp", "PCS", "54.9", "42.8", "60"),
    ("1929-W", "Conference Bundle 1-8", "SET", "1537.0", "1198.9", "0"),
    ("1936-S", "BERLIN Guest Chair, yellow", "PCS", "192.8", "150.4", "33"),
    ("1953-W", "Guest Section 1", "SET", "1009.3", "787.2", "0"),
    ("1960-S", "ROME Guest Chair, green", "PCS", "192.8", "150.4", "18"),
    ("1964-S", "TOKYO Guest Chair, blue", "PCS", "192.8", "150.4", "21"),
    ("1965-W", "Conference Bundle 2-8", "SET", "1717.4", "1339.6", "0"),
    ("1968-S", "MEXICO Swivel Chair, black", "PCS", "190.1", "148.3", "14"),
    ("1969-W", "Conference Package 1", "SET", "2951.4", "2302.1", "0"),
    ("1972-S", "MUNICH Swivel Chair, yellow", "PCS", "190.1", "148.3", "9"),
    ("1980-S", "MOSCOW Swivel Chair, red", "PCS", "190.1", "148.3", "11"),
    ("1988-S", "SEOUL Guest Chair, red", "PCS", "192.8", "150.4", "16"),
    ("1996-S", "ATLANTA Whiteboard, base", "PCS", "1397.3", "1089.9", "4"),
    ("2000-S", "SYDNEY Swivel Chair, green", "PCS", "190.1", "148.3", "7"),
    ("70000", "Side Panel", "PCS", "32.9", "25.7", "120"),
    ("70001", "Base", "PCS", "16.2", "12.6", "95"),
    ("70002", "Top Panel", "PCS", "24.1", "18.8", "80"),
    ("70003", "Back Panel", "PCS", "22.6", "17.6", "74"),
    ("70010", "Shelf", "PCS", "12.4", "9.7", "150"),
    ("70040", "Hinge", "BOX", "7.9", "6.2", "300"),
    ("70060", "Screws", "BOX", "4.1", "3.2", "500"),
    ("70100", "Paint, black", "KG", "19.8", "15.4", "45"),
    ("70101", "Paint, red", "KG", "19.8", "15.4", "38"),
    ("80100", "Printing Paper", "PACK", "9.9", "7.7", "200"),
)


def _bc_demo_rows() -> dict[str, list[Row]]:
    currency_ids = {code: _id("currency", code) for code, *_ in _BC_CURRENCIES}
    unit_ids = {code: _id("unitOfMeasure", code) for code, *_ in _BC_UNITS}
    units: list[Row] = [
        {
            "id": unit_ids[code],
            "code": code,
            "displayName": name,
            "internationalStandardCode": standard,
            "symbol": "",
        }
        for code, name, standard in _BC_UNITS
    ]
    terms_ids = [_id("paymentTerm", code) for code, *_ in _BC_PAYMENT_TERMS]
    payment_terms: list[Row] = [
        {
            "id": terms_ids[i],
            "code": code,
            "displayName": name,
            "dueDateCalculation": due,
            "discountDateCalculation": discount_date,
            "discountPercent": Decimal(percent),
            "calculateDiscountOnCreditMemos": False,
        }
        for i, (code, name, due, discount_date, percent) in enumerate(_BC_PAYMENT_TERMS)
    ]
    method_ids = [_id("shipmentMethod", code) for code, _ in _BC_SHIPMENT_METHODS]
    shipment_methods: list[Row] = [
        {"id": method_ids[i], "code": code, "displayName": name}
        for i, (code, name) in enumerate(_BC_SHIPMENT_METHODS)
    ]
    items: list[Row] = [
        {
            "id": _id("item", number),
            "number": number,
            "displayName": name,
            "type": "Inventory",
            "inventory": Decimal(stock),
            "unitPrice": Decimal(price),
            "unitCost": Decimal(cost),
            "baseUnitOfMeasureId": unit_ids[unit],
            "baseUnitOfMeasureCode": unit,
        }
        for number, name, unit, price, cost, stock in _BC_ITEMS
    ]
    currencies: list[Row] = [
        {
            "id": currency_ids[code],
            "code": code,
            "displayName": name,
            "symbol": symbol,
            "amountDecimalPlaces": places,
            "amountRoundingPrecision": Decimal(precision),
        }
        for code, name, symbol, places, precision in _BC_CURRENCIES
    ]
    codes = list(salesperson_codes().values())
    customers: list[Row] = []
    for i, (name, address, city, state, postal, phone, currency, blocked) in enumerate(
        _BC_CUSTOMERS
    ):
        slug = name.lower().replace(",", "").replace(".", "").replace(" ", "")
        customers.append(
            {
                "id": _id("customer", name),
                "number": f"C{i + 1:05d}",
                "displayName": name,
                "type": "Company",
                "addressLine1": address,
                "city": city,
                "state": state,
                "country": "US",
                "postalCode": postal,
                "phoneNumber": phone or f"+1 425 555 01{i:02d}",
                "email": f"info@{slug}.example",
                "website": f"www.{slug}.example",
                "salespersonCode": codes[i] if i < 3 else "",
                "creditLimit": Decimal(10000 * (i + 1)),
                "taxLiable": True,
                "currencyId": currency_ids.get(currency, EMPTY_GUID),
                "currencyCode": currency,
                "paymentTermsId": terms_ids[i % len(terms_ids)],
                "shipmentMethodId": method_ids[i % len(method_ids)],
                "blocked": blocked,
            }
        )
    vendors: list[Row] = []
    for i, (name, address, city, state, postal, currency) in enumerate(_BC_VENDORS):
        slug = name.lower().replace(",", "").replace(".", "").replace(" ", "")
        vendors.append(
            {
                "id": _id("vendor", name),
                "number": f"V{i + 1:05d}",
                "displayName": name,
                "addressLine1": address,
                "city": city,
                "state": state,
                "country": "US",
                "postalCode": postal,
                "phoneNumber": f"+1 425 555 02{i:02d}",
                "email": f"sales@{slug}.example",
                "website": f"www.{slug}.example",
                "currencyId": currency_ids.get(currency, EMPTY_GUID),
                "currencyCode": currency,
                "paymentTermsId": terms_ids[(i + 1) % len(terms_ids)],
            }
        )
    companies = [(c["number"], c["displayName"], "Customer") for c in customers]
    companies += [(v["number"], v["displayName"], "Vendor") for v in vendors]
    contacts: list[Row] = []
    for i, (person, company_index) in enumerate(_BC_CONTACTS):
        number, company, relation = companies[company_index]
        first, _, last = person.partition(" ")
        domain = str(company).lower().replace(",", "").replace(".", "").replace(" ", "")
        contacts.append(
            {
                "id": _id("contact", person),
                "number": f"CT{i + 1:06d}",
                "type": "Person",
                "displayName": person,
                "companyNumber": number,
                "companyName": company,
                "contactBusinessRelation": relation,
                "phoneNumber": f"+1 425 555 03{i:02d}",
                "mobilePhoneNumber": f"+1 206 555 03{i:02d}",
                "email": f"{first.lower()}.{last.lower()}@{domain}.example",
                "searchName": person.upper(),
            }
        )
    # The salespeople the first customers name already exist in BC, with the
    # e-mail of their Dataverse user: a full sync couples them by that match
    # and creates the others.
    people = {demo_user_id(f, n): (f, n) for f, n, _ in DEMO_USERS}
    salespeople: list[Row] = [
        {
            "id": _id("salesperson", code),
            "code": code,
            "name": f"{people[user][0]} {people[user][1]}",
            "email": f"{people[user][0].lower()}.{people[user][1].lower()}@cronus.example",
        }
        for user, code in list(salesperson_codes().items())[:3]
    ]
    return {
        "currencies": currencies,
        "unitsOfMeasure": units,
        "paymentTerms": payment_terms,
        "shipmentMethods": shipment_methods,
        "items": items,
        "salespeople": salespeople,
        "customers": customers,
        "vendors": vendors,
        "contacts": contacts,
    }


# ---------------------------------------------------------------- Dataverse demo

_DV_ACCOUNTS = (
    ("Adatum Corporation", "C00001", "192 Market Square", "Atlanta", "31772"),
    ("Northwind Traders", None, "2 Northwind Way", "Seattle", "98101"),
    ("Tailspin Toys", "TT-1000", "1 Airfield Road", "Portland", "97201"),
)
_DV_CONTACTS = (
    ("Robert", "Townes", 0, "Purchasing Manager"),
    ("Nancy", "Davolio", 1, "Sales Representative"),
    ("Andrew", "Fuller", 1, "Vice President, Sales"),
    ("Molly", "Clark", 2, "Owner"),
)


def _dv_demo_rows(integration_user: UUID) -> dict[str, list[Row]]:
    audit = {"_createdby_value": integration_user, "_modifiedby_value": integration_user}
    users: list[Row] = []
    for first, last, title in (*DEMO_USERS, _DISABLED_USER):
        users.append(
            {
                "systemuserid": demo_user_id(first, last),
                "firstname": first,
                "lastname": last,
                "fullname": f"{first} {last}",
                "internalemailaddress": f"{first.lower()}.{last.lower()}@cronus.example",
                "title": title,
                "domainname": f"{first.lower()}@cronus.example",
                "islicensed": True,
                "isdisabled": (first, last, title) == _DISABLED_USER,
                "accessmode": 0,
                **audit,
            }
        )
    usd = _id("transactioncurrency", "USD")
    currencies: list[Row] = [
        {
            "transactioncurrencyid": usd,
            "isocurrencycode": "USD",
            "currencyname": "US Dollar",
            "currencysymbol": "$",
            "exchangerate": Decimal("1.0"),
            "currencyprecision": 2,
            **audit,
        }
    ]
    owners = [demo_user_id(f, n) for f, n, _ in DEMO_USERS]
    accounts: list[Row] = []
    for i, (name, number, street, city, postal) in enumerate(_DV_ACCOUNTS):
        slug = name.lower().replace(" ", "")
        accounts.append(
            {
                "accountid": _id("account", name),
                "name": name,
                "accountnumber": number,
                "telephone1": f"+1 425 555 04{i:02d}",
                "emailaddress1": f"info@{slug}.example",
                "websiteurl": f"https://www.{slug}.example",
                "address1_line1": street,
                "address1_city": city,
                "address1_postalcode": postal,
                "address1_country": "United States",
                "creditlimit": Decimal(25000),
                "customertypecode": 3,
                "_ownerid_value": owners[i],
                "_transactioncurrencyid_value": usd,
                **audit,
            }
        )
    contacts: list[Row] = []
    for first, last, account_index, title in _DV_CONTACTS:
        account = accounts[account_index]
        slug = str(account["name"]).lower().replace(" ", "")
        contacts.append(
            {
                "contactid": _id("dvcontact", f"{first} {last}"),
                "firstname": first,
                "lastname": last,
                "fullname": f"{first} {last}",
                "emailaddress1": f"{first.lower()}.{last.lower()}@{slug}.example",
                "jobtitle": title,
                "_parentcustomerid_value@accounts": account["accountid"],
                "_ownerid_value": account["_ownerid_value"],
                "_transactioncurrencyid_value": usd,
                **audit,
            }
        )
    # Every organisation has the unit group "Default Unit"; Dataverse makes its base unit.
    groups: list[Row] = [
        {
            "uomscheduleid": _DV_DEFAULT_UNIT_GROUP,
            "name": "Default Unit",
            "baseuomname": "Primary Unit",
            **audit,
        }
    ]
    return {
        "systemusers": users,
        "transactioncurrencies": currencies,
        "uomschedules": groups,
        "accounts": accounts,
        "contacts": contacts,
    }


_DV_DEFAULT_UNIT_GROUP = _id("uomschedule", "Default Unit")
DEMO_PRODUCTS = (("1896-S", "Athens Desk", "995.0"),)
"""Products already in Dataverse, each with the number of a BC item (for match-based
coupling): (number, name, price)."""


async def _dv_demo_products(conn: Any, integration_user: UUID) -> tuple[int, int]:
    """The demo products, in the default unit group's base unit; (units, products)."""
    base = await conn.fetchval(
        'SELECT uomid FROM uoms WHERE "_uomscheduleid_value" = $1 AND isschedulebaseuom',
        _DV_DEFAULT_UNIT_GROUP,
    )
    currency = _id("transactioncurrency", "USD")
    rows: list[Row] = [
        {
            "productid": _id("product", number),
            "productnumber": number,
            "name": name,
            "price": Decimal(price),
            "quantitydecimal": 0,
            "_defaultuomscheduleid_value": _DV_DEFAULT_UNIT_GROUP,
            "_defaultuomid_value": base,
            "_transactioncurrencyid_value": currency,
            "_createdby_value": integration_user,
            "_modifiedby_value": integration_user,
        }
        for number, name, price in DEMO_PRODUCTS
    ]
    units = await conn.fetchval("SELECT count(*) FROM uoms")
    return units, await _copy(conn, "products", rows)


async def seed_demo(
    side: Side, dsn: str, *, wipe: bool = False, custom: Customizations | None = None
) -> SeedReport:
    """The demo rows in the catalog's tables; ``custom``'s tables stay empty."""
    started = time.perf_counter()
    conn, service = await _begin(side, dsn, wipe, custom)
    try:
        async with conn.transaction():
            if isinstance(service, DataverseService):
                tables = _dv_demo_rows(service.integration_user)
            else:
                tables = _bc_demo_rows()
            counts = {name: await _copy(conn, name, rows) for name, rows in tables.items()}
            if isinstance(service, DataverseService):
                counts["uoms"], counts["products"] = await _dv_demo_products(
                    conn, service.integration_user
                )
                # Adatum's primary contact is Robert Townes, set once both rows exist.
                await conn.execute(
                    'UPDATE accounts SET "_primarycontactid_value" = $1 WHERE accountid = $2',
                    tables["contacts"][0]["contactid"],
                    tables["accounts"][0]["accountid"],
                )
            else:
                await _set_series(conn, counts)
    finally:
        await conn.close()
    report = SeedReport(side, counts, time.perf_counter() - started)
    log.info("emulator_seeded", side=side, kind="demo", rows=sum(counts.values()))
    return report


# ---------------------------------------------------------------- synthetic


def _uuids(rng: random.Random, n: int) -> list[UUID]:
    return [UUID(int=rng.getrandbits(128), version=4) for _ in range(n)]


def _base36(value: int, width: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for _ in range(width):
        value, rest = divmod(value, 36)
        out.append(digits[rest])
    return "".join(reversed(out))


async def _bc_synthetic(conn: Any, n: int, rng: random.Random) -> dict[str, int]:
    counts: dict[str, int] = {}
    currency_ids = _uuids(rng, n)
    codes = [f"X{i:06d}" for i in range(1, n + 1)]
    counts["currencies"] = await _copy_tuples(
        conn,
        "currencies",
        ("id", "code", "displayName", "symbol", "amountDecimalPlaces", "amountRoundingPrecision"),
        [
            (currency_ids[i], codes[i], f"Currency {i + 1}", "¤", "2:2", Decimal("0.01"))
            for i in range(n)
        ],
    )
    cities = ("Atlanta", "Chicago", "Miami", "Seattle", "Denver", "Boston", "Houston")
    blocked = (" ",) * 18 + ("Ship", "All")

    def company_rows(prefix: str, kind: str) -> tuple[list[str], list[tuple[object, ...]]]:
        ids = _uuids(rng, n)
        numbers = [f"{prefix}{i:05d}" for i in range(1, n + 1)]
        rows: list[tuple[object, ...]] = []
        for i in range(n):
            foreign = rng.random() < 0.1
            which = rng.randrange(n)
            rows.append(
                (
                    ids[i],
                    numbers[i],
                    f"{kind} {i + 1}",
                    f"{i + 1} Main Street",
                    cities[i % len(cities)],
                    "US",
                    f"{10000 + i % 89999:05d}",
                    f"+1 425 555 {i % 10000:04d}",
                    f"{kind.lower()}{i + 1}@example.com",
                    currency_ids[which] if foreign else EMPTY_GUID,
                    codes[which] if foreign else "",
                    rng.choice(blocked) if kind == "Customer" else " ",
                )
            )
        return numbers, rows

    columns = (
        "id",
        "number",
        "displayName",
        "addressLine1",
        "city",
        "country",
        "postalCode",
        "phoneNumber",
        "email",
        "currencyId",
        "currencyCode",
        "blocked",
    )
    customer_numbers, customers = company_rows("C", "Customer")
    counts["customers"] = await _copy_tuples(conn, "customers", columns, customers)
    _, vendors = company_rows("V", "Vendor")
    vendor_columns = tuple(c for c in columns if c != "blocked")
    counts["vendors"] = await _copy_tuples(
        conn, "vendors", vendor_columns, [row[:-1] for row in vendors]
    )
    contact_ids = _uuids(rng, n)
    contacts = []
    for i in range(n):
        company = rng.randrange(n)
        name = f"Person {i + 1}"
        contacts.append(
            (
                contact_ids[i],
                f"CT{i + 1:06d}",
                "Person",
                name,
                customer_numbers[company],
                f"Customer {company + 1}",
                "Customer",
                f"person{i + 1}@example.com",
                name.upper(),
            )
        )
    counts["contacts"] = await _copy_tuples(
        conn,
        "contacts",
        (
            "id",
            "number",
            "type",
            "displayName",
            "companyNumber",
            "companyName",
            "contactBusinessRelation",
            "email",
            "searchName",
        ),
        contacts,
    )
    await _set_series(conn, {"customers": n, "vendors": n, "contacts": n})
    return counts


async def _dv_synthetic(conn: Any, n: int, rng: random.Random, integration: UUID) -> dict[str, int]:
    counts: dict[str, int] = {}
    user_ids = _uuids(rng, n)
    counts["systemusers"] = await _copy_tuples(
        conn,
        "systemusers",
        (
            "systemuserid",
            "firstname",
            "lastname",
            "fullname",
            "internalemailaddress",
            "islicensed",
            "isdisabled",
            "_createdby_value",
            "_modifiedby_value",
        ),
        [
            (
                user_ids[i],
                "User",
                f"{i + 1}",
                f"User {i + 1}",
                f"user{i + 1}@cronus.example",
                True,
                i % 50 == 49,
                integration,
                integration,
            )
            for i in range(n)
        ],
    )
    currency_ids = _uuids(rng, n)
    base = currency_ids[0]
    currencies = [(base, "USD", "US Dollar", "$", Decimal("1.0"), integration, integration)]
    currencies += [
        (
            currency_ids[i],
            "Q" + _base36(i, 4),
            f"Currency {i}",
            "¤",
            Decimal(rng.randrange(1, 200000)) / 1000,
            integration,
            integration,
        )
        for i in range(1, n)
    ]
    counts["transactioncurrencies"] = await _copy_tuples(
        conn,
        "transactioncurrencies",
        (
            "transactioncurrencyid",
            "isocurrencycode",
            "currencyname",
            "currencysymbol",
            "exchangerate",
            "_createdby_value",
            "_modifiedby_value",
        ),
        currencies,
    )
    account_ids = _uuids(rng, n)
    counts["accounts"] = await _copy_tuples(
        conn,
        "accounts",
        (
            "accountid",
            "name",
            "accountnumber",
            "telephone1",
            "emailaddress1",
            "address1_city",
            "creditlimit",
            "_ownerid_value",
            "_transactioncurrencyid_value",
            "_createdby_value",
            "_modifiedby_value",
        ),
        [
            (
                account_ids[i],
                f"Account {i + 1}",
                f"A{i + 1:07d}",
                f"+1 425 555 {i % 10000:04d}",
                f"account{i + 1}@example.com",
                "Seattle",
                Decimal(rng.randrange(0, 100000)),
                user_ids[rng.randrange(n)],
                base,
                integration,
                integration,
            )
            for i in range(n)
        ],
    )
    contact_ids = _uuids(rng, n)
    counts["contacts"] = await _copy_tuples(
        conn,
        "contacts",
        (
            "contactid",
            "firstname",
            "lastname",
            "fullname",
            "emailaddress1",
            target_column(_parent_lookup(), "accounts"),
            "_ownerid_value",
            "_transactioncurrencyid_value",
            "_createdby_value",
            "_modifiedby_value",
        ),
        [
            (
                contact_ids[i],
                "Person",
                f"{i + 1}",
                f"Person {i + 1}",
                f"person{i + 1}@example.com",
                account_ids[rng.randrange(n)],
                user_ids[rng.randrange(n)],
                base,
                integration,
                integration,
            )
            for i in range(n)
        ],
    )
    return counts


def _parent_lookup() -> Any:
    spec = next(s for s in DATAVERSE_SPECS if s.entity.entity_set == "contacts")
    return spec.entity.lookups["parentcustomerid"]


async def seed_synthetic(
    side: Side,
    dsn: str,
    n: int,
    *,
    wipe: bool = False,
    seed: int = 1,
    custom: Customizations | None = None,
) -> SeedReport:
    """N rows in every catalog table of ``side`` (BC salespeople excepted), loaded with
    COPY; ``custom``'s tables stay empty."""
    if n < 1:
        raise ValueError("the number of rows must be at least 1")
    started = time.perf_counter()
    conn, service = await _begin(side, dsn, wipe, custom)
    rng = random.Random(seed)
    try:
        async with conn.transaction():
            if isinstance(service, DataverseService):
                counts = await _dv_synthetic(conn, n, rng, service.integration_user)
            else:
                counts = await _bc_synthetic(conn, n, rng)
        for spec in service.specs:
            await conn.execute(f"ANALYZE {spec.table}")
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    log.info(
        "emulator_seeded",
        side=side,
        kind="synthetic",
        rows=sum(counts.values()),
        seconds=round(seconds, 2),
    )
    return SeedReport(side, counts, seconds)
