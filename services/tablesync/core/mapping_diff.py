"""What loading a set of mappings would change in the set in force: per
mapping, added, removed, or each setting and field mapping that differs.

Both sides are compared as validated mappings, so the mappings in force
include every change an operator made since the last load (direction,
filters, sync-only-coupled), and two spellings of the same filter are equal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tablesync.core import filters
from tablesync.core.mappings import FieldMapping, MappingSet, TableMapping
from tablesync.core.transformation import describe

__all__ = ["MappingChange", "diff_mappings"]

Value = str | int | float | bool | None | tuple[object, ...]


@dataclass(frozen=True, slots=True)
class MappingChange:
    """One difference: ``what`` is a mapping setting, ``fields[<label>]`` or
    ``fields[<label>].<setting>``; ``before``/``after`` are None where absent."""

    mapping: str
    kind: Literal["added", "removed", "changed"]
    what: str = ""
    before: Value = None
    after: Value = None

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.mapping}" + (f" {self.what}" if self.what else "")
        if self.kind == "removed":
            return f"- {self.mapping}" + (f" {self.what}" if self.what else "")
        return f"~ {self.mapping} {self.what}: {_show(self.before)} -> {_show(self.after)}"


def diff_mappings(current: MappingSet, new: MappingSet) -> list[MappingChange]:
    """Every change from ``current`` to ``new``, in ``new``'s order, then removals."""
    changes: list[MappingChange] = []
    for m in new.mappings:
        if m.name not in current:
            changes.append(MappingChange(m.name, "added"))
            continue
        changes.extend(_mapping_changes(current.get(m.name), m))
    changes.extend(MappingChange(m.name, "removed") for m in current.mappings if m.name not in new)
    return changes


def _settings(m: TableMapping) -> dict[str, Value]:
    return {
        "bc_table": m.bc_table,
        "dataverse_table": m.dataverse_table,
        "direction": m.direction,
        "depends_on": m.depends_on,
        "sync_only_coupled": m.sync_only_coupled,
        "table_filter": _filter(m.table_filter),
        "integration_table_filter": _filter(m.integration_table_filter),
        "bc_key": m.bc_key,
        "match": tuple(
            f"{f.bc}={f.dataverse}"
            + (" (case-sensitive)" if f.case_sensitive else "")
            + (f" (priority {f.priority})" if f.priority else "")
            for f in m.match
        ),
        "update_conflict": m.update_conflict,
        "deletion": m.deletion,
    }


def _field_settings(f: FieldMapping) -> dict[str, Value]:
    return {
        "direction": f.direction,
        "constant": f.constant if f.has_constant else None,
        "on_create_only": f.on_create_only,
        "option_map": f.transform.option_map,
        "max_length": f.transform.max_length,
        "trim": f.transform.trim,
        "code": f.transform.code,
        "enabled": f.enabled,
        "not_null": f.not_null,
        "transformation_rules": tuple(
            " ".join(f"{k}={v!r}" if k != "type" else str(v) for k, v in describe(r).items())
            for r in f.transform.rules
        ),
        "transformation_direction": f.transform.rules_direction,
        "lookup": f.lookup.mappings if f.lookup else None,
        "clear_on_failure": f.lookup.clear_on_failure if f.lookup else None,
    }


def _mapping_changes(before: TableMapping, after: TableMapping) -> list[MappingChange]:
    name = after.name
    changes = [
        MappingChange(name, "changed", key, old, new)
        for key, old in _settings(before).items()
        if old != (new := _settings(after)[key])
    ]
    old_fields = _by_label(before.fields)
    new_fields = _by_label(after.fields)
    for label, field in new_fields.items():
        if label not in old_fields:
            changes.append(MappingChange(name, "added", f"fields[{label}]"))
            continue
        was = _field_settings(old_fields[label])
        changes.extend(
            MappingChange(name, "changed", f"fields[{label}].{key}", was[key], value)
            for key, value in _field_settings(field).items()
            if was[key] != value
        )
    changes.extend(
        MappingChange(name, "removed", f"fields[{label}]")
        for label in old_fields
        if label not in new_fields
    )
    return changes


def _by_label(fields: tuple[FieldMapping, ...]) -> dict[str, FieldMapping]:
    found: dict[str, FieldMapping] = {}
    for f in fields:
        label = f.label()
        # Two constants may name the same side's field: keep them apart.
        n = sum(1 for seen in found if seen == label or seen.startswith(f"{label}#"))
        found[f"{label}#{n + 1}" if n else label] = f
    return found


def _filter(expr: filters.Expr | None) -> str | None:
    return filters.to_odata(expr) if expr is not None else None


def _show(value: Value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)
