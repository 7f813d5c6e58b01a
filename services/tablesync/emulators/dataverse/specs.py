"""How Dataverse's tables are stored: ``versionnumber`` rows, stamps to the second,
text compared without regard to case.

The tables are the catalog's, with the custom columns the emulator's customization file
adds to them, and the custom tables it declares (``common.custom``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from tablesync.core.catalog import EdmType, Entity, FieldDef, Lookup, LookupTarget, entities
from tablesync.emulators.common.custom import CustomError, Customizations, DataverseColumn
from tablesync.emulators.common.sql import TableSpec

__all__ = [
    "API_ROOT",
    "BASE_CURRENCY_SQL",
    "DATAVERSE_SPECS",
    "INTEGRATION_USER_NAME",
    "PRODUCT_UNIT_FOREIGN",
    "PRODUCT_UNIT_MISSING",
    "dataverse_specs",
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

# Creating a unit group creates its base unit: named as the group's baseuomname,
# quantity 1, the unit the group's others are counted in.
_BASE_UNIT = (
    "CREATE OR REPLACE FUNCTION ts_uomschedule_base_unit() RETURNS trigger "
    "LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    '    INSERT INTO "uoms" ("name", "quantity", "isschedulebaseuom", "_uomscheduleid_value",\n'
    '                        "_createdby_value", "_modifiedby_value")\n'
    '    VALUES (NEW."baseuomname", 1, true, NEW."uomscheduleid",\n'
    '            NEW."_createdby_value", NEW."_modifiedby_value");\n'
    "    RETURN NULL;\n"
    "END\n$$",
    'CREATE TRIGGER "uomschedules__base_unit" AFTER INSERT ON "uomschedules" '
    "FOR EACH ROW EXECUTE FUNCTION ts_uomschedule_base_unit()",
)
PRODUCT_UNIT_MISSING = "Required field '{}' is missing: product cannot be created without it."
PRODUCT_UNIT_FOREIGN = "The default unit is not a unit of the product's unit group."


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# A product is sold in units of one unit group: it needs the group and a default unit of
# that group (the Product Management solution's rule, whichever way the row is written).
_PRODUCT_UNITS = (
    "CREATE OR REPLACE FUNCTION ts_product_units() RETURNS trigger LANGUAGE plpgsql AS $$\n"
    "BEGIN\n"
    '    IF NEW."_defaultuomscheduleid_value" IS NULL THEN\n'
    f"        PERFORM ts_raise('required', "
    f"{_sql_text(PRODUCT_UNIT_MISSING.format('defaultuomscheduleid'))});\n"
    '    ELSIF NEW."_defaultuomid_value" IS NULL THEN\n'
    f"        PERFORM ts_raise('required', "
    f"{_sql_text(PRODUCT_UNIT_MISSING.format('defaultuomid'))});\n"
    '    ELSIF NOT EXISTS (SELECT 1 FROM "uoms" WHERE "uomid" = NEW."_defaultuomid_value"\n'
    '                      AND "_uomscheduleid_value" = NEW."_defaultuomscheduleid_value") THEN\n'
    f"        PERFORM ts_raise('bad_value', {_sql_text(PRODUCT_UNIT_FOREIGN)});\n"
    "    END IF;\n"
    "    RETURN NEW;\n"
    "END\n$$",
    'CREATE TRIGGER "products__units" BEFORE INSERT OR UPDATE ON "products" '
    "FOR EACH ROW EXECUTE FUNCTION ts_product_units()",
)
_TRIGGERS = {"uomschedules": _BASE_UNIT, "products": _PRODUCT_UNITS}

_EDM_TYPES: dict[str, EdmType] = {
    "string": "Edm.String",
    "memo": "Edm.String",
    "integer": "Edm.Int32",
    "picklist": "Edm.Int32",
    "bigint": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "money": "Edm.Decimal",
    "boolean": "Edm.Boolean",
    "datetime": "Edm.DateTimeOffset",
    "uniqueidentifier": "Edm.Guid",
}
# A column's length when the file gives none: Dataverse's defaults for new columns.
_DEFAULT_LENGTHS = {"string": 100, "memo": 2000}


def _spec(entity: Entity) -> TableSpec:
    return TableSpec(
        entity=entity,
        version_column="versionnumber",
        precision="second",
        case_insensitive=True,
        namespace="Microsoft.Dynamics.CRM",
        extra_indexes=_EXTRA_INDEXES.get(entity.entity_set, ()),
        change_log=True,
        triggers=_TRIGGERS.get(entity.entity_set, ()),
    )


def _columns(
    columns: Iterable[DataverseColumn], sets: dict[str, str], choices: Mapping[str, Iterable[int]]
) -> tuple[list[FieldDef], list[Lookup]]:
    """The fields and lookups of custom columns; ``sets`` maps logical names to entity sets,
    ``choices`` the global option sets' names to their values.

    A custom choice column only takes the values of its options, as Dataverse checks."""
    fields: list[FieldDef] = []
    lookups: list[Lookup] = []
    for column in columns:
        if column.type == "lookup":
            target = column.target or ""
            if target not in sets:
                raise CustomError(f"lookup {column.name!r} targets unknown table {target!r}")
            lookup = Lookup(
                attribute=column.name,
                value_field=f"_{column.name}_value",
                targets=(LookupTarget(sets[target], target, column.navigation or column.name),),
                on_delete="remove_link",
            )
            lookups.append(lookup)
            fields.append(
                FieldDef(lookup.value_field, "Edm.Guid", read_only=True, lookup=column.name)
            )
            continue
        values: Iterable[int] = ()
        if column.type == "picklist":
            values = column.options or choices[column.option_set or ""]
        fields.append(
            FieldDef(
                column.name,
                _EDM_TYPES[column.type],
                max_length=column.max_length or _DEFAULT_LENGTHS.get(column.type),
                required=column.required,
                options=tuple(str(v) for v in values),
            )
        )
    return fields, lookups


def _extended(
    entity: Entity,
    columns: Iterable[DataverseColumn],
    sets: dict[str, str],
    choices: Mapping[str, Iterable[int]],
) -> Entity:
    fields, lookups = _columns(columns, sets, choices)
    clash = [f.name for f in fields if f.name in entity.fields]
    clash += [lk.attribute for lk in lookups if lk.attribute in entity.lookups]
    if clash:
        raise CustomError(f"{entity.logical_name} already has a column {clash[0]!r}")
    return replace(
        entity,
        fields=MappingProxyType({**entity.fields, **{f.name: f for f in fields}}),
        lookups=MappingProxyType({**entity.lookups, **{lk.attribute: lk for lk in lookups}}),
    )


def _user_lookup(attribute: str, *, writable: bool) -> Lookup:
    return Lookup(
        attribute=attribute,
        value_field=f"_{attribute}_value",
        targets=(LookupTarget("systemusers", "systemuser", attribute),),
        writable=writable,
        default="caller",
    )


def _custom_entity(logical_name: str, entity_set: str) -> Entity:
    """A new user-owned table: what Dataverse gives every one before its own columns."""
    key = f"{logical_name}id"
    lookups = (
        _user_lookup("ownerid", writable=True),
        _user_lookup("createdby", writable=False),
        _user_lookup("modifiedby", writable=False),
    )
    fields = (
        FieldDef(key, "Edm.Guid", nullable=False),
        FieldDef("statecode", "Edm.Int32", nullable=False, default=0),
        FieldDef("statuscode", "Edm.Int32", nullable=False, default=1),
        FieldDef("_ownerid_value", "Edm.Guid", read_only=True, lookup="ownerid"),
        FieldDef("createdon", "Edm.DateTimeOffset", read_only=True, nullable=False),
        FieldDef("modifiedon", "Edm.DateTimeOffset", read_only=True, nullable=False),
        FieldDef("_createdby_value", "Edm.Guid", read_only=True, lookup="createdby"),
        FieldDef("_modifiedby_value", "Edm.Guid", read_only=True, lookup="modifiedby"),
        FieldDef("versionnumber", "Edm.Int64", read_only=True, nullable=False),
    )
    return Entity(
        side="dataverse",
        entity_set=entity_set,
        logical_name=logical_name,
        key=key,
        modified_field="modifiedon",
        fields=MappingProxyType({f.name: f for f in fields}),
        lookups=MappingProxyType({lk.attribute: lk for lk in lookups}),
        created_field="createdon",
        modified_by_field="_modifiedby_value",
        version_field="versionnumber",
    )


def dataverse_specs(custom: Customizations) -> tuple[TableSpec, ...]:
    """The catalog's tables with ``custom``'s columns, then ``custom``'s tables."""
    declared = custom.dataverse
    built_in = {e.logical_name: e for e in entities("dataverse")}
    sets = {name: e.entity_set for name, e in built_in.items()}
    for table in declared.tables:
        if table.logical_name in sets or table.entity_set in sets.values():
            raise CustomError(f"table {table.logical_name!r} ({table.entity_set}) exists already")
        sets[table.logical_name] = table.entity_set
    unknown = [name for name in declared.columns if name not in built_in]
    if unknown:
        raise CustomError(
            f"columns are declared for {unknown[0]!r}, which is no table of the catalog "
            "(a custom table declares its columns itself)"
        )
    global_sets = {o.name: tuple(o.options) for o in declared.option_sets}
    for table_columns in (*declared.columns.values(), *(t.columns for t in declared.tables)):
        for column in table_columns:
            if column.option_set is not None and column.option_set not in global_sets:
                raise CustomError(f"{column.name!r} uses unknown option set {column.option_set!r}")
    result = [
        _spec(_extended(e, declared.columns.get(e.logical_name, ()), sets, global_sets))
        for e in built_in.values()
    ]
    for table in declared.tables:
        entity = _custom_entity(table.logical_name, table.entity_set)
        result.append(_spec(_extended(entity, table.columns, sets, global_sets)))
    return tuple(result)


DATAVERSE_SPECS = dataverse_specs(Customizations.none())

_BY_SET: dict[str, TableSpec] = {s.entity.entity_set: s for s in DATAVERSE_SPECS}


def register(specs: Iterable[TableSpec]) -> None:
    """Make ``spec_for`` know the custom tables among ``specs``.

    ``spec_for`` resolves the target of a lookup bind, which only needs the target's table,
    key and alternate keys; custom columns change none of them, so a catalog table keeps
    the spec it has."""
    for spec in specs:
        _BY_SET.setdefault(spec.entity.entity_set, spec)


def spec_for(entity_set: str) -> TableSpec | None:
    """The table a lookup bind targets (each service routes by its own specs)."""
    return _BY_SET.get(entity_set)
