"""The tables the services work with: what each side's metadata describes, with the
built-in catalog layered on top.

The built-in catalog (``core.catalog``) knows the tables of the default mappings in
full: their modified-on field, keys, lookups and navigation properties. A table the
catalog lacks — a custom Dataverse table, a custom BC API page — is known from the
side's metadata alone (``core.metadata``); a custom column on a catalog table joins
that table's fields. Where both know a field, the catalog's word stands.

Dataverse lookups are read as ``_<attribute>_value`` and written through their
single-valued navigation property, ``<navigation>@odata.bind``: the name ``$metadata``
gives it (the lookup's schema name, case kept, e.g. ``new_AccountId``), else the
attribute's name; a lookup's targets are named by logical name in the metadata and turned
into entity sets through the described tables and the catalog. A target neither knows
is left out: a mapping that needs it is refused at load, naming the lookup.

Nothing here does I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tablesync.core import catalog
from tablesync.core.events import Side
from tablesync.core.mapping_load import TableInfo, TableInfoSource, catalog_tables
from tablesync.core.metadata import FieldInfo
from tablesync.core.metadata import TableInfo as Described

__all__ = [
    "BC_STAMPS",
    "LOOKUP_TYPES",
    "bc_stamp",
    "described_tables",
    "outside_catalog",
    "value_field",
]

LOOKUP_TYPES = frozenset({"Lookup", "Customer", "Owner"})
"""Dataverse attribute types that refer to rows of other tables."""

BC_STAMPS = ("lastModifiedDateTime", "systemModifiedAt")
"""The modified-on fields a BC API page exposes, in the order they are preferred."""


def value_field(attribute: str) -> str:
    """The property a Dataverse lookup ``attribute`` is read back as."""
    return f"_{attribute}_value"


def bc_stamp(table: Described) -> str | None:
    """The modified-on field of a BC page: ``lastModifiedDateTime`` or ``systemModifiedAt``."""
    names = {f.name for f in table.fields}
    return next((s for s in BC_STAMPS if s in names), None)


def described_tables(
    described: Iterable[Described], base: TableInfoSource | None = None
) -> TableInfoSource:
    """The tables of ``base`` (the built-in catalog by default) and of ``described``;
    for a table both know, the base's fields with the described ones added."""
    tables = list(described)
    base = base if base is not None else catalog_tables()
    sets = _entity_sets(tables)
    merged: dict[tuple[Side, str], TableInfo] = {
        (side, name): info
        for side in ("bc", "dataverse")
        for name in base.known(side)
        if (info := base.get(side, name)) is not None
    }
    for table in tables:
        key = (table.side, table.entity_set)
        found = _from_metadata(table, sets)
        known = merged.get(key)
        merged[key] = found if known is None else _layered(known, found)
    return TableInfoSource(merged)


def _entity_sets(tables: Iterable[Described]) -> Mapping[str, str]:
    """Dataverse logical names to entity sets, the catalog's first."""
    sets = {e.logical_name: e.entity_set for e in catalog.entities("dataverse")}
    for table in tables:
        if table.side == "dataverse":
            sets.setdefault(table.name, table.entity_set)
    return sets


def _is_lookup(side: Side, field: FieldInfo) -> bool:
    return side == "dataverse" and field.type in LOOKUP_TYPES


def _from_metadata(table: Described, sets: Mapping[str, str]) -> TableInfo:
    fields: set[str] = set()
    read_only: set[str] = set()
    lookups: dict[str, Mapping[str, str]] = {}
    for f in table.fields:
        if _is_lookup(table.side, f):
            fields.add(value_field(f.name))
            read_only.add(value_field(f.name))
            # A polymorphic lookup has one navigation property per target, none of them
            # the attribute's own.
            navigation = f.navigation if f.navigation and len(f.targets) == 1 else f.name
            lookups[f.name] = {sets[t]: navigation for t in f.targets if t in sets}
            if not f.updatable and not f.creatable:
                read_only.add(f.name)
            continue
        fields.add(f.name)
        if f.read_only or f.key:
            read_only.add(f.name)
    types = {f.name: f.type for f in table.fields} if table.side == "bc" else {}
    return TableInfo(
        fields=frozenset(fields), read_only=frozenset(read_only), lookups=lookups, types=types
    )


def _layered(known: TableInfo, found: TableInfo) -> TableInfo:
    added = found.fields - known.fields
    return TableInfo(
        fields=known.fields | added,
        read_only=known.read_only | (found.read_only & added),
        lookups={**found.lookups, **known.lookups},
        types={name: t for name, t in found.types.items() if name in added},
    )


def outside_catalog(document: Any) -> list[tuple[Side, str]]:
    """The tables a mappings document names that the built-in catalog lacks: those it
    takes the services' metadata to load."""
    raw = document.get("mappings") if isinstance(document, Mapping) else None
    found: list[tuple[Side, str]] = []
    for body in raw.values() if isinstance(raw, Mapping) else ():
        if not isinstance(body, Mapping):
            continue
        for side, key in (("bc", "bc_table"), ("dataverse", "dataverse_table")):
            table = body.get(key)
            pair: tuple[Side, str] = (side, str(table))  # type: ignore[assignment]
            if isinstance(table, str) and pair not in catalog.CATALOG and pair not in found:
                found.append(pair)
    return found
