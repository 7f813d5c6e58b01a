"""What a connector needs to know about one entity set: key, stamp, where it lives.

The catalog (``tablesync.core.catalog``) is the source; sets it does not list fall back
to the APIs' naming conventions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tablesync.core import catalog
from tablesync.core.described import bc_stamp
from tablesync.core.events import Side
from tablesync.core.metadata import TableInfo

__all__ = ["EntitySpec", "SpecSource", "catalog_specs", "default_spec", "described_specs"]


@dataclass(frozen=True, slots=True)
class EntitySpec:
    entity_set: str
    key: str
    """The key property (``id`` on BC, ``accountid`` on Dataverse's ``accounts``)."""
    stamp: str
    """The modified-on property: ``lastModifiedDateTime`` on BC, ``modifiedon`` on Dataverse."""
    route: str
    """The collection's path: relative to the base URL, or from the host root when it starts
    with '/'. ``{company}`` stands for the BC company id."""
    modified_by: str | None = None
    """The property naming who last modified a row (Dataverse ``_modifiedby_value``)."""


SpecSource = Callable[[str], EntitySpec]


def catalog_specs(side: Side, base_path: str) -> SpecSource:
    """Specs from the catalog for a side whose base URL has the path ``base_path``.

    A BC custom API (``api_route`` ``publisher/group/version``) lives beside API v2.0:
    ``<bc root>/api/<api_route>/companies(<id>)/<set>``, where ``<bc root>`` is the base
    path up to its ``/api/`` segment."""
    cache: dict[str, EntitySpec] = {}
    bc_root = _bc_root(base_path)

    def lookup(entity_set: str) -> EntitySpec:
        found = cache.get(entity_set)
        if found is not None:
            return found
        entry = catalog.CATALOG.get((side, entity_set))
        if entry is None:
            found = default_spec(side, entity_set)
        elif side == "bc":
            route = f"companies({{company}})/{entity_set}"
            if entry.api_route:
                route = f"{bc_root}/api/{entry.api_route.strip('/')}/{route}"
            found = EntitySpec(entity_set, entry.key, entry.modified_field, route)
        else:
            found = EntitySpec(
                entity_set, entry.key, entry.modified_field, entity_set, entry.modified_by_field
            )
        cache[entity_set] = found
        return found

    return lookup


def _bc_root(base_path: str) -> str:
    root = base_path.rstrip("/")
    if "/api/" in f"{root}/":
        root = f"{root}/"[: f"{root}/".rindex("/api/")]
    return root


def described_specs(side: Side, base_path: str, tables: Iterable[TableInfo]) -> SpecSource:
    """Specs from the catalog, else from ``tables`` (the side's metadata): a custom BC
    page on its own route with ``lastModifiedDateTime`` or ``systemModifiedAt``, a custom
    Dataverse table with its primary id and ``modifiedon``; else the naming conventions."""
    builtin = catalog_specs(side, base_path)
    bc_root = _bc_root(base_path)
    found: dict[str, EntitySpec] = {}
    for table in tables:
        if table.side != side or (side, table.entity_set) in catalog.CATALOG:
            continue
        if side == "bc":
            stamp = bc_stamp(table)
            route = f"companies({{company}})/{table.entity_set}"
            if table.route and table.route != "v2.0":
                route = f"{bc_root}/api/{table.route.strip('/')}/{route}"
            if stamp is not None:
                found[table.entity_set] = EntitySpec(
                    table.entity_set, table.key or "id", stamp, route
                )
        elif table.key is not None:
            found[table.entity_set] = EntitySpec(
                table.entity_set, table.key, "modifiedon", table.entity_set, "_modifiedby_value"
            )

    def lookup(entity_set: str) -> EntitySpec:
        described = found.get(entity_set)
        return described if described is not None else builtin(entity_set)

    return lookup


def default_spec(side: str, entity_set: str) -> EntitySpec:
    """The spec that the APIs' naming conventions give, for sets the catalog lacks."""
    if side == "bc":
        return EntitySpec(
            entity_set, "id", "lastModifiedDateTime", f"companies({{company}})/{entity_set}"
        )
    return EntitySpec(
        entity_set, f"{_singular(entity_set)}id", "modifiedon", entity_set, "_modifiedby_value"
    )


def _singular(entity_set: str) -> str:
    # Dataverse entity set names are the logical name's plural; its key is <logical>id.
    if entity_set.endswith("ies"):
        return entity_set[:-3] + "y"
    if entity_set.endswith(("sses", "xes", "ches", "shes")):
        return entity_set[:-2]
    if entity_set.endswith("s"):
        return entity_set[:-1]
    return entity_set
