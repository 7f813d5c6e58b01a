"""Turns a mappings document (parsed YAML or JSON) into a validated ``MappingSet``.

Every refusal is a ``MappingError`` naming the mapping and the field, with
``path`` pointing into the document so a loader can name the line; filter
errors also give the position in the expression."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from tablesync.core import catalog, filters
from tablesync.core.dependency import dependency_order
from tablesync.core.events import Direction, FieldValue, Side
from tablesync.core.mappings import (
    DELETION_POLICIES,
    MAPPING_DIRECTIONS,
    UPDATE_CONFLICT_POLICIES,
    DeletionPolicy,
    FieldMapping,
    Lookup,
    MappingDirection,
    MappingSet,
    MatchField,
    TableMapping,
    Transform,
    UpdateConflictPolicy,
    allows,
)
from tablesync.core.transformation import Rule, RuleError, parse_rules
from tablesync.errors import FilterSyntaxError, MappingError

__all__ = ["TableInfo", "TableInfoSource", "build_mappings", "catalog_tables", "change_mapping"]

_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,29}$")
_MAPPING_KEYS = frozenset(
    {
        "bc_table",
        "dataverse_table",
        "direction",
        "depends_on",
        "sync_only_coupled",
        "table_filter",
        "integration_table_filter",
        "bc_key",
        "match",
        "update_conflict",
        "deletion",
        "fields",
    }
)
_FIELD_KEYS = frozenset(
    {
        "bc",
        "dataverse",
        "direction",
        "constant",
        "on_create_only",
        "lookup",
        "clear_on_failure",
        "option_map",
        "max_length",
        "trim",
        "code",
        "enabled",
        "not_null",
        "transformation_rules",
        "transformation_direction",
    }
)


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What validation needs to know of one entity set of one side."""

    fields: frozenset[str]
    read_only: frozenset[str]
    # Dataverse lookups: attribute -> {target entity set: navigation property}
    lookups: Mapping[str, Mapping[str, str]]
    types: Mapping[str, str] = field(default_factory=dict)
    """BC: each field's EDM type, where only the metadata knows it (custom pages)."""


class TableInfoSource:
    """Where table descriptions come from (the catalog, or a test's own)."""

    def __init__(self, tables: Mapping[tuple[Side, str], TableInfo]) -> None:
        self._tables = tables

    def get(self, side: Side, table: str) -> TableInfo | None:
        return self._tables.get((side, table))

    def known(self, side: Side) -> list[str]:
        return sorted(t for s, t in self._tables if s == side)


def build_mappings(document: Mapping[str, Any], tables: TableInfoSource) -> MappingSet:
    """Validates a whole document and returns the mappings in dependency order."""
    raw = document.get("mappings") if isinstance(document, Mapping) else None
    if not isinstance(raw, Mapping) or not raw:
        raise MappingError("the document needs a non-empty 'mappings' section", path=("mappings",))
    built = [
        _mapping(str(name), body, tables) for name, body in cast(Mapping[str, Any], raw).items()
    ]
    ordered = dependency_order(built)
    result = MappingSet(ordered)
    for m in ordered:
        _check_references(m, result)
    return result


def change_mapping(
    document: dict[str, Any],
    name: str,
    tables: TableInfoSource,
    *,
    direction: str | None = None,
    sync_only_coupled: bool | None = None,
    table_filter: str | None = None,
    integration_table_filter: str | None = None,
) -> TableMapping:
    """An operator's change of one mapping, made in ``document`` (the mappings
    in force, as stored) and validated with the rest of it; an empty filter
    text clears the filter. ``KeyError`` names the known mappings."""
    body = document["mappings"].get(name)
    if body is None:
        known = ", ".join(document["mappings"])
        raise KeyError(f"unknown mapping {name!r} (known: {known})")
    if direction is not None:
        body["direction"] = direction
    if sync_only_coupled is not None:
        body["sync_only_coupled"] = sync_only_coupled
    for key, value in (
        ("table_filter", table_filter),
        ("integration_table_filter", integration_table_filter),
    ):
        if value is not None:
            body[key] = value or None
    return build_mappings(document, tables).get(name)


def _expect(
    condition: bool, message: str, mapping: str, field: str | None, path: tuple[str | int, ...]
) -> None:
    if not condition:
        raise MappingError(message, mapping=mapping, field=field, path=path)


def _flag(
    body: Mapping[str, Any],
    key: str,
    default: bool,
    mapping: str,
    field: str | None,
    path: tuple[str | int, ...],
) -> bool:
    """The true-or-false option ``key`` of ``body`` (``default`` when absent)."""
    value = body.get(key, default)
    _expect(isinstance(value, bool), f"{key} is true or false", mapping, field, (*path, key))
    return bool(value)


def _mapping(name: str, body: Any, tables: TableInfoSource) -> TableMapping:
    path: tuple[str | int, ...] = ("mappings", name)
    _expect(
        bool(_NAME.match(name)),
        "mapping names are upper-case letters, digits and _",
        name,
        None,
        path,
    )
    _expect(isinstance(body, Mapping), "a mapping is a set of keys", name, None, path)
    unknown = sorted(set(body) - _MAPPING_KEYS)
    _expect(
        not unknown,
        f"unknown key(s) {', '.join(unknown)}",
        name,
        unknown[0] if unknown else None,
        path,
    )
    bc_table = _text(body, "bc_table", name, path, required=True)
    dv_table = _text(body, "dataverse_table", name, path, required=True)
    assert bc_table is not None and dv_table is not None
    bc_info = tables.get("bc", bc_table)
    dv_info = tables.get("dataverse", dv_table)
    _expect(
        bc_info is not None,
        f"unknown Business Central entity set {bc_table!r} "
        f"(known: {', '.join(tables.known('bc'))})",
        name,
        "bc_table",
        (*path, "bc_table"),
    )
    _expect(
        dv_info is not None,
        f"unknown Dataverse table {dv_table!r} (known: {', '.join(tables.known('dataverse'))})",
        name,
        "dataverse_table",
        (*path, "dataverse_table"),
    )
    assert bc_info is not None and dv_info is not None
    direction = _choice(body, "direction", MAPPING_DIRECTIONS, name, path, default=None)
    _expect(direction is not None, "direction is required", name, "direction", (*path, "direction"))
    depends = body.get("depends_on", [])
    _expect(
        isinstance(depends, list) and all(isinstance(d, str) for d in depends),
        "depends_on is a list of mapping names",
        name,
        "depends_on",
        (*path, "depends_on"),
    )
    only_coupled = _flag(body, "sync_only_coupled", True, name, "sync_only_coupled", path)
    table_filter = _filter(body, "table_filter", bc_info, name, path)
    dv_filter = _filter(body, "integration_table_filter", dv_info, name, path)
    bc_key = _text(body, "bc_key", name, path)
    if bc_key is not None:
        _expect(
            bc_key in bc_info.fields,
            f"bc_key {bc_key!r} is not a field of {bc_table}",
            name,
            "bc_key",
            (*path, "bc_key"),
        )
    match = _match(body, bc_info, dv_info, bc_table, dv_table, name, path)
    conflict = cast(
        UpdateConflictPolicy,
        _choice(body, "update_conflict", UPDATE_CONFLICT_POLICIES, name, path, default="none"),
    )
    deletion = cast(
        DeletionPolicy, _choice(body, "deletion", DELETION_POLICIES, name, path, default="none")
    )
    raw_fields = body.get("fields")
    _expect(
        isinstance(raw_fields, list) and bool(raw_fields),
        "fields is a non-empty list",
        name,
        "fields",
        (*path, "fields"),
    )
    fields = tuple(
        _field(
            raw,
            i,
            cast(MappingDirection, direction),
            bc_info,
            dv_info,
            bc_table,
            dv_table,
            name,
            (*path, "fields", i),
        )
        for i, raw in enumerate(cast(list[Any], raw_fields))
    )
    _check_match_enabled(match, fields, name, path)
    return TableMapping(
        name=name,
        bc_table=bc_table,
        dataverse_table=dv_table,
        direction=cast(MappingDirection, direction),
        fields=fields,
        depends_on=tuple(depends),
        sync_only_coupled=only_coupled,
        table_filter=table_filter,
        integration_table_filter=dv_filter,
        bc_key=bc_key,
        match=match,
        update_conflict=conflict,
        deletion=deletion,
    )


def _check_match_enabled(
    match: Sequence[MatchField],
    fields: Sequence[FieldMapping],
    name: str,
    path: tuple[str | int, ...],
) -> None:
    """A match pair whose only field mappings are disabled is refused: a
    disabled field is not compared, and leaving the pair out of matching
    instead would turn a coupling into a duplicate without a word."""
    for i, m in enumerate(match):
        pair = [f for f in fields if (f.bc, f.dataverse) == (m.bc, m.dataverse)]
        _expect(
            not pair or any(f.enabled for f in pair),
            f"match field {m.bc}={m.dataverse} is a disabled field mapping's pair: "
            "enable the field mapping or take the pair out of match",
            name,
            m.bc,
            (*path, "match", i),
        )


def _text(
    body: Mapping[str, Any],
    key: str,
    name: str,
    path: tuple[str | int, ...],
    *,
    required: bool = False,
) -> str | None:
    value = body.get(key)
    if value is None:
        _expect(not required, f"{key} is required", name, key, (*path, key))
        return None
    _expect(
        isinstance(value, str) and value.strip() != "",
        f"{key} must be a non-empty string",
        name,
        key,
        (*path, key),
    )
    return cast(str, value)


def _choice(
    body: Mapping[str, Any],
    key: str,
    allowed: Sequence[str],
    name: str,
    path: tuple[str | int, ...],
    *,
    default: str | None,
) -> str | None:
    value = body.get(key, default)
    if value is None:
        return None
    _expect(
        value in allowed,
        f"{key} must be one of {', '.join(allowed)}; got {value!r}",
        name,
        key,
        (*path, key),
    )
    return cast(str, value)


def _filter(
    body: Mapping[str, Any], key: str, info: TableInfo, name: str, path: tuple[str | int, ...]
) -> filters.Expr | None:
    text = body.get(key)
    if text is None:
        return None
    _expect(
        isinstance(text, str),
        f"{key} must be a filter expression in quotes",
        name,
        key,
        (*path, key),
    )
    try:
        expr = filters.parse(cast(str, text))
        filters.validate_properties(expr, info.fields)
    except FilterSyntaxError as exc:
        raise MappingError(f"{key}: {exc}", mapping=name, field=key, path=(*path, key)) from exc
    except MappingError as exc:
        raise MappingError(
            f"{key}: {exc.reason}", mapping=name, field=key, path=(*path, key)
        ) from exc
    return expr


def _match(
    body: Mapping[str, Any],
    bc_info: TableInfo,
    dv_info: TableInfo,
    bc_table: str,
    dv_table: str,
    name: str,
    path: tuple[str | int, ...],
) -> tuple[MatchField, ...]:
    raw = body.get("match", [])
    _expect(
        isinstance(raw, list),
        "match is a list of {bc, dataverse} pairs",
        name,
        "match",
        (*path, "match"),
    )
    found = []
    for i, item in enumerate(cast(list[Any], raw)):
        where = (*path, "match", i)
        _expect(
            isinstance(item, Mapping)
            and isinstance(item.get("bc"), str)
            and isinstance(item.get("dataverse"), str),
            "each match entry names a bc and a dataverse field",
            name,
            "match",
            where,
        )
        _expect(
            item["bc"] in bc_info.fields,
            f"match field {item['bc']!r} is not a field of {bc_table}",
            name,
            item["bc"],
            where,
        )
        _expect(
            item["dataverse"] in dv_info.fields,
            f"match field {item['dataverse']!r} is not a field of {dv_table}",
            name,
            item["dataverse"],
            where,
        )
        priority = item.get("priority", 0)
        _expect(
            isinstance(priority, int) and not isinstance(priority, bool) and priority >= 0,
            "a match priority is a whole number, 0 or more",
            name,
            "priority",
            (*where, "priority"),
        )
        found.append(
            MatchField(
                item["bc"], item["dataverse"], bool(item.get("case_sensitive", False)), priority
            )
        )
    return tuple(found)


def _field(
    raw: Any,
    index: int,
    mapping_direction: MappingDirection,
    bc_info: TableInfo,
    dv_info: TableInfo,
    bc_table: str,
    dv_table: str,
    name: str,
    path: tuple[str | int, ...],
) -> FieldMapping:
    _expect(
        isinstance(raw, Mapping), "a field mapping is a set of keys", name, f"fields[{index}]", path
    )
    bc, dv = raw.get("bc"), raw.get("dataverse")
    label = f"{bc or '(constant)'}<->{dv or '(constant)'}"
    unknown = sorted(set(raw) - _FIELD_KEYS)
    _expect(not unknown, f"unknown key(s) {', '.join(unknown)}", name, label, path)
    _expect(
        bc is None or isinstance(bc, str), "bc must be a field name", name, label, (*path, "bc")
    )
    _expect(
        dv is None or isinstance(dv, str),
        "dataverse must be a field name",
        name,
        label,
        (*path, "dataverse"),
    )
    has_constant = "constant" in raw
    _expect(
        bc is not None or dv is not None,
        "a field mapping names a bc field, a dataverse field, or both",
        name,
        label,
        path,
    )
    if has_constant:
        _expect(
            (bc is None) != (dv is None),
            "a constant names exactly one field: the one it is written to",
            name,
            label,
            path,
        )
        constant = raw["constant"]
        _expect(
            constant is None or isinstance(constant, bool | int | float | str),
            "a constant is a string, number, boolean or null",
            name,
            label,
            (*path, "constant"),
        )
    else:
        constant = None
        _expect(
            bc is not None and dv is not None,
            "a field mapping without a constant needs both a bc and a dataverse field",
            name,
            label,
            path,
        )
    implied: MappingDirection = (
        "from_integration"
        if has_constant and bc is not None
        else "to_integration"
        if has_constant
        else mapping_direction
    )
    direction = raw.get("direction", implied if has_constant else mapping_direction)
    _expect(
        direction in MAPPING_DIRECTIONS,
        f"direction must be one of {', '.join(MAPPING_DIRECTIONS)}",
        name,
        label,
        (*path, "direction"),
    )
    _expect(
        _compatible(mapping_direction, direction),
        f"field direction {direction} never applies in a {mapping_direction} mapping",
        name,
        label,
        (*path, "direction"),
    )
    if has_constant:
        _expect(
            direction == implied,
            f"a constant for the {'BC' if bc else 'Dataverse'} side is written {implied}",
            name,
            label,
            (*path, "direction"),
        )
    lookup = _lookup(raw, dv, dv_info, name, label, path)
    for side, field_name, info, table in (
        ("bc", bc, bc_info, bc_table),
        ("dataverse", dv, dv_info, dv_table),
    ):
        if field_name is None:
            continue
        known = info.lookups.keys() | info.fields if side == "dataverse" else info.fields
        _expect(
            field_name in known,
            f"{field_name!r} is not a field of {table}",
            name,
            label,
            (*path, side),
        )
        writes_here = direction == "bidirectional" or (direction == "to_integration") == (
            side == "dataverse"
        )
        _expect(
            not (writes_here and field_name in info.read_only),
            f"{field_name!r} is read-only in {table}; map it only towards the other side",
            name,
            label,
            (*path, "direction"),
        )
    if dv is not None and dv in dv_info.lookups and not has_constant:
        _expect(
            lookup is not None,
            f"{dv!r} is a lookup: name the mapping(s) it resolves through with lookup:",
            name,
            label,
            (*path, "lookup"),
        )
    transform = _transform(raw, direction, name, label, path)
    rules, rules_direction = _rules(
        raw, cast(MappingDirection, direction), mapping_direction, lookup, name, label, path
    )
    transform = replace(transform, rules=rules, rules_direction=rules_direction)
    enabled = _flag(raw, "enabled", True, name, label, path)
    not_null = _flag(raw, "not_null", False, name, label, path)
    on_create = _flag(raw, "on_create_only", False, name, label, path)
    return FieldMapping(
        bc=bc,
        dataverse=dv,
        direction=cast(MappingDirection, direction),
        constant=cast(FieldValue, constant),
        has_constant=has_constant,
        on_create_only=on_create,
        transform=transform,
        lookup=lookup,
        bc_type=bc_info.types.get(bc) if bc is not None else None,
        enabled=enabled,
        not_null=not_null,
    )


def _rules(
    raw: Mapping[str, Any],
    direction: MappingDirection,
    mapping_direction: MappingDirection,
    lookup: Lookup | None,
    name: str,
    label: str,
    path: tuple[str | int, ...],
) -> tuple[tuple[Rule, ...], Direction | None]:
    """A field's transformation rules and the one direction they apply in
    (BC's Transformation Direction): a one-way field's own; a bidirectional
    field's must be named, since the rules change a value one way only."""
    where = (*path, "transformation_rules")
    if "transformation_rules" not in raw:
        _expect(
            "transformation_direction" not in raw,
            "transformation_direction only applies with transformation_rules",
            name,
            label,
            (*path, "transformation_direction"),
        )
        return (), None
    try:
        rules = parse_rules(raw["transformation_rules"])
    except RuleError as exc:
        at: tuple[str | int, ...] = () if exc.index < 0 else (exc.index,)
        at += (exc.key,) if exc.key else ()
        rule = f"transformation_rules[{exc.index}]: " if exc.index >= 0 else ""
        raise MappingError(
            f"{rule}{exc.message}", mapping=name, field=label, path=(*where, *at)
        ) from exc
    if not rules:
        return (), None
    _expect(
        "constant" not in raw,
        "a constant is written as it is: transformation_rules do not apply to it",
        name,
        label,
        where,
    )
    _expect(
        lookup is None,
        "a lookup's value is a reference: transformation_rules do not apply to it",
        name,
        label,
        where,
    )
    given = raw.get("transformation_direction")
    if given is None:
        _expect(
            direction != "bidirectional",
            "a bidirectional field applies its transformation_rules one way only: "
            "name it with transformation_direction (to_integration or from_integration)",
            name,
            label,
            (*path, "transformation_direction"),
        )
        return rules, cast(Direction, direction)
    _expect(
        given in ("to_integration", "from_integration"),
        "transformation_direction must be one of to_integration, from_integration",
        name,
        label,
        (*path, "transformation_direction"),
    )
    _expect(
        allows(direction, given) and allows(mapping_direction, given),
        f"transformation_direction {given} is never a direction of this field "
        f"({direction} in a {mapping_direction} mapping): its rules would never apply",
        name,
        label,
        (*path, "transformation_direction"),
    )
    return rules, cast(Direction, given)


def _compatible(mapping_direction: MappingDirection, field_direction: str) -> bool:
    if mapping_direction == "bidirectional" or field_direction == "bidirectional":
        return True
    return mapping_direction == field_direction


def _lookup(
    raw: Mapping[str, Any],
    dv: str | None,
    dv_info: TableInfo,
    name: str,
    label: str,
    path: tuple[str | int, ...],
) -> Lookup | None:
    if "lookup" not in raw:
        _expect(
            "clear_on_failure" not in raw,
            "clear_on_failure only applies to lookups",
            name,
            label,
            (*path, "clear_on_failure"),
        )
        return None
    targets = raw["lookup"]
    if isinstance(targets, str):
        targets = [targets]
    _expect(
        isinstance(targets, list) and bool(targets) and all(isinstance(t, str) for t in targets),
        "lookup names one mapping or a list of mappings",
        name,
        label,
        (*path, "lookup"),
    )
    _expect(
        dv is not None and dv in dv_info.lookups,
        f"{dv!r} is not a Dataverse lookup attribute",
        name,
        label,
        (*path, "dataverse"),
    )
    clear = raw.get("clear_on_failure", [])
    if clear is True:
        clear = ["to_integration", "from_integration"]
    elif clear is False:
        clear = []
    _expect(
        isinstance(clear, list) and all(c in ("to_integration", "from_integration") for c in clear),
        "clear_on_failure is true, false or a list of directions",
        name,
        label,
        (*path, "clear_on_failure"),
    )
    assert dv is not None
    return Lookup(
        mappings=tuple(targets),
        navigation=tuple(sorted(dv_info.lookups[dv].items())),
        clear_on_failure=tuple(cast(list[Direction], clear)),
    )


def _transform(
    raw: Mapping[str, Any], direction: str, name: str, label: str, path: tuple[str | int, ...]
) -> Transform:
    option_map = raw.get("option_map", {})
    _expect(
        isinstance(option_map, Mapping),
        "option_map maps BC values to Dataverse values",
        name,
        label,
        (*path, "option_map"),
    )
    pairs = tuple((k, v) for k, v in cast(Mapping[Any, Any], option_map).items())
    if direction != "to_integration" and pairs:
        targets = [v for _, v in pairs]
        _expect(
            len(set(map(repr, targets))) == len(targets),
            "option_map must be one-to-one to map Dataverse values back to BC",
            name,
            label,
            (*path, "option_map"),
        )
    max_length = raw.get("max_length")
    _expect(
        max_length is None
        or (isinstance(max_length, int) and not isinstance(max_length, bool) and max_length > 0),
        "max_length is a positive integer",
        name,
        label,
        (*path, "max_length"),
    )
    return Transform(
        option_map=cast(tuple[tuple[FieldValue, FieldValue], ...], pairs),
        max_length=max_length,
        trim=_flag(raw, "trim", False, name, label, path),
        code=_flag(raw, "code", False, name, label, path),
    )


def _check_references(m: TableMapping, all_mappings: MappingSet) -> None:
    for i, f in enumerate(m.fields):
        if f.lookup is None:
            continue
        path = ("mappings", m.name, "fields", i, "lookup")
        for target in f.lookup.mappings:
            _expect(
                target in all_mappings,
                f"lookup through unknown mapping {target!r}",
                m.name,
                f.label(),
                path,
            )
            target_mapping = all_mappings.get(target)
            _expect(
                target_mapping.bc_key is not None,
                f"lookup target {target} has no bc_key to resolve BC values by",
                m.name,
                f.label(),
                path,
            )
            _expect(
                f.lookup.navigation_for(target_mapping.dataverse_table) is not None,
                f"{f.dataverse} cannot refer to {target_mapping.dataverse_table} ({target})",
                m.name,
                f.label(),
                path,
            )
        for d in f.lookup.clear_on_failure:
            _expect(
                allows(f.direction, d),
                f"clear_on_failure {d} is not a direction of this field",
                m.name,
                f.label(),
                path,
            )


def catalog_tables() -> TableInfoSource:
    """Table descriptions from the shared catalog of both APIs."""
    tables: dict[tuple[Side, str], TableInfo] = {}
    for (side, entity_set), entity in catalog.CATALOG.items():
        lookups = {
            name: {t.entity_set: t.navigation for t in lk.targets}
            for name, lk in entity.lookups.items()
            if lk.writable or side == "dataverse"
        }
        read_only = {f.name for f in entity.fields.values() if f.read_only}
        read_only |= {name for name, lk in entity.lookups.items() if not lk.writable}
        tables[(side, entity_set)] = TableInfo(
            fields=frozenset(entity.fields),
            read_only=frozenset(read_only),
            lookups=lookups,
        )
    return TableInfoSource(tables)
