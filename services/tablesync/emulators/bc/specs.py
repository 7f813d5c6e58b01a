"""How BC's entity sets are stored, and the number series that number new records.

The entity sets are the catalog's and those of the custom API pages the emulator's
customization file declares (``common.custom``)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from types import MappingProxyType

from tablesync.core.catalog import (
    EMPTY_GUID,
    DefaultValue,
    EdmType,
    Entity,
    FieldDef,
    entities,
)
from tablesync.emulators.common.custom import BcField, BcPage, CustomError, Customizations
from tablesync.emulators.common.sql import TableSpec

__all__ = [
    "API_ROOT",
    "BC_SPECS",
    "LCY_CODE",
    "NUMBER_SERIES",
    "bc_specs",
    "page_entity",
    "root_of",
]

API_ROOT = "/BC/api"
LCY_CODE = "USD"
"""CRONUS USA's local currency: a blank currency code, or this one, means it."""


_CODE_KEYED = frozenset({"currencies", "unitsOfMeasure", "paymentTerms", "shipmentMethods"})


def _spec(entity: Entity) -> TableSpec:
    return TableSpec(
        entity=entity,
        version_column="_version",
        precision="milliseconds",
        case_insensitive=False,
        namespace="Microsoft.NAV",
        # A currency's, unit's, payment term's and shipment method's code is its
        # primary key in BC.
        unique_columns=("code",) if entity.entity_set in _CODE_KEYED else (),
    )


_EDM_TYPES: dict[str, EdmType] = {
    "string": "Edm.String",
    "enum": "Edm.String",
    "integer": "Edm.Int32",
    "decimal": "Edm.Decimal",
    "boolean": "Edm.Boolean",
    "date": "Edm.Date",
    "datetime": "Edm.DateTimeOffset",
    "guid": "Edm.Guid",
}
# BC fields are never null: each type's blank value (catalog.py).
_BLANKS: dict[str, DefaultValue] = {
    "string": "",
    "integer": 0,
    "decimal": Decimal(0),
    "boolean": False,
    "date": date(1, 1, 1),
    "guid": EMPTY_GUID,
}
# A Text field of a table extension without a length: AL's own default is 30.
_DEFAULT_LENGTH = 30


def _field(field: BcField) -> FieldDef:
    options = field.options or ()
    blank: DefaultValue = options[0] if options else _BLANKS.get(field.type)
    if field.type == "datetime":
        # A DateTime field that is not set reads 0001-01-01T00:00:00Z; stored as null.
        return FieldDef(field.name, "Edm.DateTimeOffset", read_only=field.read_only)
    return FieldDef(
        field.name,
        _EDM_TYPES[field.type],
        max_length=field.max_length or (_DEFAULT_LENGTH if field.type == "string" else None),
        read_only=field.read_only,
        required=field.required,
        nullable=False,
        default=blank,
        options=options,
    )


def page_entity(page: BcPage) -> Entity:
    """The entity set a custom API page serves: ``id``, its fields, ``lastModifiedDateTime``."""
    fields = (
        FieldDef("id", "Edm.Guid", read_only=True, nullable=False),
        *(_field(f) for f in page.fields),
        FieldDef("lastModifiedDateTime", "Edm.DateTimeOffset", read_only=True, nullable=False),
    )
    return Entity(
        side="bc",
        entity_set=page.entity_set,
        logical_name=page.entity_name,
        key="id",
        modified_field="lastModifiedDateTime",
        fields=MappingProxyType({f.name: f for f in fields}),
        api_route=page.route,
    )


def bc_specs(custom: Customizations) -> tuple[TableSpec, ...]:
    """The catalog's entity sets, then those of ``custom``'s API pages."""
    result = [_spec(e) for e in entities("bc")]
    for page in custom.bc.pages:
        # Each entity set is one table of the emulator's database, whatever its route.
        if any(s.entity.entity_set == page.entity_set for s in result):
            raise CustomError(f"entity set {page.entity_set!r} exists already")
        if any(s.entity.logical_name == page.entity_name for s in result):
            raise CustomError(f"entity name {page.entity_name!r} exists already")
        result.append(_spec(page_entity(page)))
    return tuple(result)


BC_SPECS = bc_specs(Customizations.none())

NUMBER_SERIES = MappingProxyType(
    {
        "customers": ("C", 5),
        "vendors": ("V", 5),
        "contacts": ("CT", 6),
        "salespeople": ("SP", 5),
        "items": ("", 4),
    }
)
"""Entity set → (prefix, digits): ``C00001``, ``V00001``, ``CT000001``, ``SP00001``,
items ``1000`` on (CRONUS numbers them so)."""


def root_of(api_route: str | None) -> str:
    return f"{API_ROOT}/{api_route or 'v2.0'}"
