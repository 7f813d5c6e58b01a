"""What BC's table triggers do on a write, as column assignments of the same statement.

- A number series fills ``number`` (``code`` for salespeople) when a create leaves it blank.
- ``currencyCode`` and ``currencyId`` validate each other against ``currencies``; a blank
  code or ``USD`` (CRONUS USA's local currency) means the empty GUID.
- An item's ``baseUnitOfMeasureCode`` and ``baseUnitOfMeasureId`` validate each other
  against ``unitsOfMeasure``; blank is the empty GUID.
- ``paymentTermsId`` (customers, vendors) and ``shipmentMethodId`` (customers) are the
  empty GUID or the id of a payment term or shipment method.
- ``salespersonCode`` must name a salesperson.
- A contact's ``companyNumber`` must name a customer or a vendor; it sets
  ``contactBusinessRelation`` and, unless given, ``companyName``. ``searchName`` is the
  upper-cased ``displayName``.

A reference that names nothing fails the statement through ``ts_raise`` with BC's
"contains a value that cannot be found in the related table" message.
"""

from __future__ import annotations

from collections.abc import Mapping

from tablesync.core.catalog import EMPTY_GUID
from tablesync.emulators.bc.specs import LCY_CODE
from tablesync.emulators.bc.style import TABLE_CAPTIONS
from tablesync.emulators.common.sql import Params, TableSpec, ident, literal, sql_type
from tablesync.emulators.common.writes import Assign

__all__ = ["ID_REFERENCES", "relation_message", "write_assigns"]

_EMPTY = literal(EMPTY_GUID)


def relation_message(table: str, field: str, value: object, related: str) -> str:
    return (
        f"The field {field} of table {table} contains a value ({value}) that cannot be found "
        f"in the related table ({related})."
    )


def _relation(params: Params, table: str, field: str, value: object, related: str) -> str:
    message = relation_message(table, field, value, related)
    return f"ts_raise('relation', {params.add(message, 'text')})"


def _currency(
    spec: TableSpec,
    values: Mapping[str, object],
    placeholders: dict[str, str],
    params: Params,
    assigns: dict[str, Assign],
) -> None:
    table = TABLE_CAPTIONS[spec.entity.entity_set][0]
    if "currencyCode" in values:
        code = placeholders["currencyCode"]
        fail = _relation(params, table, "Currency Code", values["currencyCode"], "Currency")
        assigns["currencyId"] = Assign(
            "currencyId",
            f"CASE WHEN {code} IN ('', {literal(LCY_CODE)}) THEN {_EMPTY} ELSE COALESCE("
            f"(SELECT id FROM currencies WHERE code = {code}), {fail}::uuid) END",
        )
    elif "currencyId" in values:
        currency = placeholders["currencyId"]
        fail = _relation(params, table, "Currency Id", values["currencyId"], "Currency")
        assigns["currencyCode"] = Assign(
            "currencyCode",
            f"CASE WHEN {currency} = {_EMPTY} THEN '' ELSE COALESCE("
            f"(SELECT code FROM currencies WHERE id = {currency}), {fail}) END",
        )


def _unit_of_measure(
    values: Mapping[str, object],
    placeholders: dict[str, str],
    params: Params,
    assigns: dict[str, Assign],
) -> None:
    if "baseUnitOfMeasureCode" in values:
        code = placeholders["baseUnitOfMeasureCode"]
        fail = _relation(
            params,
            "Item",
            "Base Unit of Measure",
            values["baseUnitOfMeasureCode"],
            "Unit of Measure",
        )
        assigns["baseUnitOfMeasureId"] = Assign(
            "baseUnitOfMeasureId",
            f"CASE WHEN {code} = '' THEN {_EMPTY} ELSE COALESCE("
            f"(SELECT id FROM {ident('unitsOfMeasure')} WHERE code = {code}), {fail}::uuid) END",
        )
    elif "baseUnitOfMeasureId" in values:
        unit = placeholders["baseUnitOfMeasureId"]
        fail = _relation(
            params,
            "Item",
            "Base Unit of Measure Id",
            values["baseUnitOfMeasureId"],
            "Unit of Measure",
        )
        assigns["baseUnitOfMeasureCode"] = Assign(
            "baseUnitOfMeasureCode",
            f"CASE WHEN {unit} = {_EMPTY} THEN '' ELSE COALESCE("
            f"(SELECT code FROM {ident('unitsOfMeasure')} WHERE id = {unit}), {fail}) END",
        )


ID_REFERENCES = {
    "paymentTermsId": ("Payment Terms Id", "paymentTerms", "Payment Terms"),
    "shipmentMethodId": ("Shipment Method Id", "shipmentMethods", "Shipment Method"),
}
"""Field → (its caption, the entity set it names a record of, that table's caption)."""


def _id_reference(
    spec: TableSpec,
    name: str,
    values: Mapping[str, object],
    placeholders: dict[str, str],
    params: Params,
) -> Assign:
    caption, related_set, related = ID_REFERENCES[name]
    table = TABLE_CAPTIONS[spec.entity.entity_set][0]
    given = placeholders[name]
    fail = _relation(params, table, caption, values[name], related)
    return Assign(
        name,
        f"CASE WHEN {given} = {_EMPTY} OR EXISTS (SELECT 1 FROM {ident(related_set)} "
        f"WHERE id = {given}) THEN {given} ELSE {fail}::uuid END",
    )


def _salesperson(
    values: Mapping[str, object], placeholders: dict[str, str], params: Params
) -> Assign:
    code = placeholders["salespersonCode"]
    fail = _relation(
        params, "Customer", "Salesperson Code", values["salespersonCode"], "Salesperson/Purchaser"
    )
    return Assign(
        "salespersonCode",
        f"CASE WHEN {code} = '' OR EXISTS (SELECT 1 FROM salespeople WHERE code = {code}) "
        f"THEN {code} ELSE {fail} END",
    )


def _contact(
    values: Mapping[str, object],
    placeholders: dict[str, str],
    params: Params,
    assigns: dict[str, Assign],
    creating: bool,
) -> None:
    if creating or "companyNumber" in values:
        number = placeholders.get("companyNumber", "''")
        shown = values.get("companyNumber", "")
        fail = _relation(params, "Contact", "Company No.", shown, "Customer/Vendor")
        customer = f"(SELECT {ident('displayName')} FROM customers WHERE number = {number})"
        vendor = f"(SELECT {ident('displayName')} FROM vendors WHERE number = {number})"
        assigns["contactBusinessRelation"] = Assign(
            "contactBusinessRelation",
            f"CASE WHEN {number} = '' THEN 'None' "
            f"WHEN EXISTS (SELECT 1 FROM customers WHERE number = {number}) THEN 'Customer' "
            f"WHEN EXISTS (SELECT 1 FROM vendors WHERE number = {number}) THEN 'Vendor' "
            f"ELSE {fail} END",
        )
        if "companyName" not in values:
            assigns["companyName"] = Assign(
                "companyName",
                f"CASE WHEN {number} = '' THEN '' ELSE COALESCE({customer}, {vendor}, '') END",
            )
    if creating or "displayName" in values:
        name = placeholders.get("displayName", "''")
        assigns["searchName"] = Assign("searchName", f"upper({name})")


def write_assigns(
    spec: TableSpec, values: Mapping[str, object], params: Params, *, creating: bool
) -> list[Assign]:
    """The assignments of a create or update carrying ``values`` (already converted)."""
    entity = spec.entity
    number = entity.number_field
    numbered = creating and number is not None and not values.get(number)
    # A blank number on a create is the number series' to fill: it takes no
    # parameter, or the statement would carry one it never uses.
    placeholders = {
        name: params.add(value, sql_type(entity.fields[name]))
        for name, value in values.items()
        if not (numbered and name == number)
    }
    assigns = {name: Assign(name, placeholder) for name, placeholder in placeholders.items()}
    entity_set = entity.entity_set
    if entity_set in ("customers", "vendors"):
        _currency(spec, values, placeholders, params, assigns)
    if entity_set in ("customers", "vendors"):
        for name in ID_REFERENCES:
            if name in values and name in entity.fields:
                assigns[name] = _id_reference(spec, name, values, placeholders, params)
    if entity_set == "items":
        _unit_of_measure(values, placeholders, params, assigns)
    if entity_set == "customers" and "salespersonCode" in values:
        assigns["salespersonCode"] = _salesperson(values, placeholders, params)
    if entity_set == "contacts":
        _contact(values, placeholders, params, assigns, creating)
    if numbered and number is not None:
        assigns[number] = Assign(number, f"ts_next_no({literal(entity_set)})")
    assigns[entity.modified_field] = Assign(entity.modified_field, spec.stamp_expr())
    assigns[spec.version_column] = Assign(spec.version_column, "nextval('ts_version')")
    return list(assigns.values())
