"""What Dataverse's table and column definitions say of the emulator's tables.

Each table spec becomes an ``EntityMetadata`` and each of its columns an
``AttributeMetadata`` of the derived type its kind has ("Web API Metadata Entity Type
Reference"): a lookup's ``_x_value`` property is the attribute ``x`` (``Lookup``,
``Owner`` for ``ownerid``, ``Customer`` for a lookup to accounts and contacts), a
``statecode`` is ``State``, a ``statuscode`` ``Status``, the catalog's choice columns
``Picklist`` with their options. The kinds the catalog's EDM types do not tell apart
(money, multi-line text, choices) are named here for the catalog's tables, and by the
customization file for custom columns.

Ids (``MetadataId``) are derived from the names, so they stay the same across restarts.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from tablesync.core.catalog import FieldDef, Lookup
from tablesync.emulators.common.custom import Customizations, DataverseColumn, OptionSetDef
from tablesync.emulators.common.sql import TableSpec

__all__ = ["Attribute", "Definitions", "OptionSet", "Table", "definitions"]

_NAMESPACE = uuid.UUID("0c7a3f1e-5b1d-4f4e-9a51-6d2b8e0f7a10")
_INT32 = (-2_147_483_648, 2_147_483_647)
_INT64 = (-9_223_372_036_854_775_808, 9_223_372_036_854_775_807)


def metadata_id(*names: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, "/".join(names))


@dataclass(frozen=True, slots=True)
class OptionSet:
    name: str
    options: tuple[tuple[int, str], ...]
    option_set_type: str
    """``Picklist``, ``State``, ``Status`` or ``Boolean``."""
    is_global: bool = False
    display_name: str = ""

    @property
    def metadata_id(self) -> uuid.UUID:
        return metadata_id("optionset", self.name)


@dataclass(frozen=True, slots=True)
class Attribute:
    logical_name: str
    schema_name: str
    attribute_type: str
    """The ``AttributeTypeCode``: ``String``, ``Picklist``, ``Lookup`` …"""
    metadata_type: str
    """The derived entity type: ``StringAttributeMetadata`` …"""
    entity_logical_name: str
    display_name: str
    field: FieldDef | None
    lookup: Lookup | None
    is_custom: bool
    is_primary_id: bool = False
    is_primary_name: bool = False
    valid_for_create: bool = True
    valid_for_update: bool = True
    required_level: str = "None"
    option_set: OptionSet | None = None
    column_number: int = 0

    @property
    def metadata_id(self) -> uuid.UUID:
        return metadata_id("attribute", self.entity_logical_name, self.logical_name)

    @property
    def type_name(self) -> str:
        """``AttributeTypeName.Value``: ``StringType``, ``PicklistType`` …"""
        if self.metadata_type == "UniqueIdentifierAttributeMetadata":
            return "UniqueidentifierType"
        return self.attribute_type + "Type"


@dataclass(frozen=True, slots=True)
class Table:
    spec: TableSpec
    schema_name: str
    primary_name: str | None
    display_name: str
    display_collection_name: str
    is_custom: bool
    object_type_code: int
    ownership: str
    attributes: tuple[Attribute, ...]

    @property
    def logical_name(self) -> str:
        return self.spec.entity.logical_name

    @property
    def metadata_id(self) -> uuid.UUID:
        return metadata_id("entity", self.logical_name)

    def attribute(self, logical_name: str) -> Attribute | None:
        return next((a for a in self.attributes if a.logical_name == logical_name), None)


@dataclass(frozen=True, slots=True)
class Definitions:
    tables: tuple[Table, ...]
    option_sets: tuple[OptionSet, ...]
    """The global option sets."""

    def table(self, logical_name: str) -> Table | None:
        return next((t for t in self.tables if t.logical_name == logical_name), None)

    def table_by_id(self, key: uuid.UUID) -> Table | None:
        return next((t for t in self.tables if t.metadata_id == key), None)

    def option_set(self, name: str) -> OptionSet | None:
        return next((o for o in self.option_sets if o.name == name), None)


@dataclass(frozen=True, slots=True)
class _Builtin:
    schema_name: str
    display_name: str
    display_collection_name: str
    primary_name: str
    object_type_code: int
    ownership: str


_BUILTIN_TABLES = {
    "account": _Builtin("Account", "Account", "Accounts", "name", 1, "UserOwned"),
    "contact": _Builtin("Contact", "Contact", "Contacts", "fullname", 2, "UserOwned"),
    "systemuser": _Builtin("SystemUser", "User", "Users", "fullname", 8, "BusinessOwned"),
    "transactioncurrency": _Builtin(
        "TransactionCurrency", "Currency", "Currencies", "currencyname", 9105, "OrganizationOwned"
    ),
    # From BC's integration solution, installed with it: a solution table numbered
    # below the emulator's custom tables, which count from 10000.
    "bcbi_company": _Builtin(
        "bcbi_Company", "Company", "Companies", "bcbi_name", 9_990, "UserOwned"
    ),
    "product": _Builtin("Product", "Product", "Products", "name", 1024, "OrganizationOwned"),
    "uom": _Builtin("UoM", "Unit", "Units", "name", 1055, "None"),
    "uomschedule": _Builtin(
        "UoMSchedule", "Unit Group", "Unit Groups", "name", 1056, "OrganizationOwned"
    ),
}
_STATE = OptionSet("statecode", ((0, "Active"), (1, "Inactive")), "State")
_STATUS = OptionSet("statuscode", ((1, "Active"), (2, "Inactive")), "Status")
_BUILTIN_CHOICES = {
    ("account", "customertypecode"): OptionSet(
        "account_customertypecode",
        tuple(
            enumerate(
                (
                    "Competitor",
                    "Consultant",
                    "Customer",
                    "Investor",
                    "Partner",
                    "Influencer",
                    "Press",
                    "Prospect",
                    "Reseller",
                    "Supplier",
                    "Vendor",
                    "Other",
                ),
                start=1,
            )
        ),
        "Picklist",
    ),
    # What BC's "Handling missing option values" lists as Dataverse's options of
    # the account's three choices its Payment Terms, Shipment Method and
    # Shipping Agent map to.
    ("account", "paymenttermscode"): OptionSet(
        "account_paymenttermscode",
        ((1, "Net 30"), (2, "2% 10, Net 30"), (3, "Net 45"), (4, "Net 60")),
        "Picklist",
    ),
    ("account", "address1_freighttermscode"): OptionSet(
        "account_address1_freighttermscode", ((1, "FOB"), (2, "No Charge")), "Picklist"
    ),
    ("account", "address1_shippingmethodcode"): OptionSet(
        "account_address1_shippingmethodcode",
        tuple(
            enumerate(
                ("Airborne", "DHL", "FedEx", "UPS", "Postal Mail", "Full Load", "Will Call"),
                start=1,
            )
        ),
        "Picklist",
    ),
    ("product", "producttypecode"): OptionSet(
        "product_producttypecode",
        ((1, "Sales Inventory"), (2, "Miscellaneous Charges"), (3, "Services"), (4, "Flat Fees")),
        "Picklist",
    ),
    ("product", "productstructure"): OptionSet(
        "product_productstructure",
        ((1, "Product"), (2, "Product Family"), (3, "Product Bundle")),
        "Picklist",
    ),
    ("systemuser", "accessmode"): OptionSet(
        "systemuser_accessmode",
        (
            (0, "Read-Write"),
            (1, "Administrative"),
            (2, "Read"),
            (3, "Support User"),
            (4, "Non-interactive"),
            (5, "Delegated Admin"),
        ),
        "Picklist",
    ),
}
_BUILTIN_KINDS = {
    ("account", "creditlimit"): "money",
    ("account", "description"): "memo",
    ("product", "price"): "money",
    ("product", "standardcost"): "money",
    ("product", "currentcost"): "money",
    ("product", "description"): "memo",
    ("uomschedule", "description"): "memo",
}
_KINDS = {
    # custom column type → (AttributeType, metadata entity type)
    "string": ("String", "StringAttributeMetadata"),
    "memo": ("Memo", "MemoAttributeMetadata"),
    "integer": ("Integer", "IntegerAttributeMetadata"),
    "bigint": ("BigInt", "BigIntAttributeMetadata"),
    "decimal": ("Decimal", "DecimalAttributeMetadata"),
    "money": ("Money", "MoneyAttributeMetadata"),
    "boolean": ("Boolean", "BooleanAttributeMetadata"),
    "datetime": ("DateTime", "DateTimeAttributeMetadata"),
    "uniqueidentifier": ("Uniqueidentifier", "UniqueIdentifierAttributeMetadata"),
    "picklist": ("Picklist", "PicklistAttributeMetadata"),
    "lookup": ("Lookup", "LookupAttributeMetadata"),
}
_EDM_KINDS = {
    "Edm.String": "string",
    "Edm.Int32": "integer",
    "Edm.Int64": "bigint",
    "Edm.Decimal": "decimal",
    "Edm.Boolean": "boolean",
    "Edm.DateTimeOffset": "datetime",
    "Edm.Date": "datetime",
    "Edm.Guid": "uniqueidentifier",
}
_SYSTEM = frozenset({"createdon", "modifiedon", "versionnumber", "createdby", "modifiedby"})


def schema_name(logical_name: str) -> str:
    """A catalog column's schema name, capitalised at each word the logical name shows."""
    return "_".join(part[:1].upper() + part[1:] for part in logical_name.split("_"))


def _label(column: DataverseColumn) -> str:
    return column.display_name or column.name


def _option_set(
    table: str, column: DataverseColumn, global_sets: Mapping[str, OptionSet]
) -> OptionSet:
    if column.option_set is not None:
        return global_sets[column.option_set]
    return OptionSet(f"{table}_{column.name}", tuple((column.options or {}).items()), "Picklist")


def _attribute(
    spec: TableSpec,
    name: str,
    field: FieldDef | None,
    lookup: Lookup | None,
    custom: DataverseColumn | None,
    global_sets: Mapping[str, OptionSet],
    primary_name: str | None,
    custom_table: bool,
    number: int,
) -> Attribute:
    entity = spec.entity
    table = entity.logical_name
    option_set: OptionSet | None = None
    if lookup is not None:
        kind = "lookup"
        if lookup.attribute == "ownerid":
            attribute_type = "Owner"
        elif lookup.polymorphic:
            attribute_type = "Customer"
        else:
            attribute_type = "Lookup"
        metadata_type = "LookupAttributeMetadata"
    else:
        assert field is not None
        if custom is not None:
            kind = custom.type
        else:
            kind = _BUILTIN_KINDS.get((table, name), _EDM_KINDS[field.edm_type])
        attribute_type, metadata_type = _KINDS[kind]
        if name == "statecode":
            attribute_type, metadata_type, option_set = "State", "StateAttributeMetadata", _STATE
        elif name == "statuscode":
            attribute_type, metadata_type, option_set = "Status", "StatusAttributeMetadata", _STATUS
        elif custom is not None and kind == "picklist":
            option_set = _option_set(table, custom, global_sets)
        elif (table, name) in _BUILTIN_CHOICES:
            attribute_type, metadata_type = _KINDS["picklist"]
            option_set = _BUILTIN_CHOICES[(table, name)]
    key = name == entity.key
    computed = field is not None and bool(field.computed_from)
    if lookup is not None:
        creatable = updatable = lookup.writable
    else:
        assert field is not None
        # A create may give the key; computed and read-only columns are the server's.
        creatable = key or not (computed or field.read_only)
        updatable = not (key or computed or field.read_only)
    required = (field is not None and field.required) or key
    is_custom = custom is not None or (custom_table and name not in _SYSTEM and not key)
    return Attribute(
        logical_name=name,
        schema_name=custom.name if custom is not None else schema_name(name),
        attribute_type=attribute_type,
        metadata_type=metadata_type,
        entity_logical_name=table,
        display_name=_label(custom) if custom is not None else schema_name(name).replace("_", " "),
        field=field,
        lookup=lookup,
        is_custom=is_custom,
        is_primary_id=key,
        is_primary_name=name == primary_name,
        valid_for_create=creatable,
        valid_for_update=updatable,
        required_level="SystemRequired" if required else "None",
        option_set=option_set,
        column_number=number,
    )


def _table(
    spec: TableSpec,
    custom: Customizations,
    global_sets: Mapping[str, OptionSet],
    custom_number: int,
) -> Table:
    entity = spec.entity
    declared_table = next(
        (t for t in custom.dataverse.tables if t.logical_name == entity.logical_name), None
    )
    declared_columns = {
        c.name: c
        for c in (
            declared_table.columns
            if declared_table is not None
            else custom.dataverse.columns.get(entity.logical_name, ())
        )
    }
    builtin = _BUILTIN_TABLES.get(entity.logical_name)
    primary_name = (
        declared_table.primary_name
        if declared_table is not None
        else (builtin.primary_name if builtin else None)
    )
    attributes: list[Attribute] = []
    for field in entity.fields.values():
        lookup = entity.lookups.get(field.lookup) if field.lookup else None
        name = lookup.attribute if lookup is not None else field.name
        attributes.append(
            _attribute(
                spec,
                name,
                None if lookup is not None else field,
                lookup,
                declared_columns.get(name),
                global_sets,
                primary_name,
                declared_table is not None,
                len(attributes) + 1,
            )
        )
    if declared_table is not None:
        display = declared_table.display_name or entity.logical_name
        return Table(
            spec=spec,
            schema_name=entity.logical_name,
            primary_name=primary_name,
            display_name=display,
            display_collection_name=declared_table.display_collection_name or display,
            is_custom=True,
            object_type_code=custom_number,
            ownership="UserOwned",
            attributes=tuple(attributes),
        )
    assert builtin is not None
    return Table(
        spec=spec,
        schema_name=builtin.schema_name,
        primary_name=primary_name,
        display_name=builtin.display_name,
        display_collection_name=builtin.display_collection_name,
        is_custom=False,
        object_type_code=builtin.object_type_code,
        ownership=builtin.ownership,
        attributes=tuple(attributes),
    )


def _global(definition: OptionSetDef) -> OptionSet:
    return OptionSet(
        definition.name,
        tuple(definition.options.items()),
        "Picklist",
        is_global=True,
        display_name=definition.display_name or definition.name,
    )


def definitions(specs: tuple[TableSpec, ...], custom: Customizations) -> Definitions:
    """The definitions of ``specs``, the tables an emulator built from ``custom`` serves."""
    global_sets = {o.name: _global(o) for o in custom.dataverse.option_sets}
    tables = []
    # Custom tables take type codes from 10000 on, as Dataverse numbers them.
    next_code = 10_000
    for spec in specs:
        tables.append(_table(spec, custom, global_sets, next_code))
        if tables[-1].is_custom:
            next_code += 1
    return Definitions(tuple(tables), tuple(global_sets.values()))
