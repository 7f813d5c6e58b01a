"""Is a new version of a record schema readable by and of the previous one?

Backward: a reader on the new schema reads what the old one wrote, so every
field the new version adds needs a default. Forward: a reader still on the old
schema reads what the new one writes, so every field the new version drops
needs a default in the old one. Types of kept fields must resolve under
Avro's promotion rules."""

from __future__ import annotations

from typing import Any

__all__ = ["compatibility_problems"]

_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every reason ``new`` is not both backward and forward compatible with ``old``."""
    problems: list[str] = []
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    new_fields = {f["name"]: f for f in new.get("fields", [])}
    for name, field in new_fields.items():
        if name not in old_fields and "default" not in field:
            problems.append(f"field {name!r} added without a default")
    for name, field in old_fields.items():
        if name not in new_fields and "default" not in field:
            problems.append(f"field {name!r} removed but had no default")
    for name in old_fields.keys() & new_fields.keys():
        old_t, new_t = old_fields[name]["type"], new_fields[name]["type"]
        if not (_resolves(old_t, new_t) and _resolves(new_t, old_t)):
            problems.append(f"field {name!r} changed type from {old_t!r} to {new_t!r}")
    return problems


def _kind(t: Any) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, list):
        return "union"
    return str(t.get("logicalType") or t["type"])


def _resolves(writer: Any, reader: Any) -> bool:
    """Whether data written as ``writer`` reads as ``reader`` (the subset of the spec we use)."""
    if isinstance(reader, list):
        branches = writer if isinstance(writer, list) else [writer]
        return all(any(_resolves(b, r) for r in reader) for b in branches)
    if isinstance(writer, list):
        return all(_resolves(b, reader) for b in writer)
    wk, rk = _kind(writer), _kind(reader)
    if wk != rk:
        return (wk, rk) in _PROMOTIONS
    if isinstance(writer, dict) and isinstance(reader, dict):
        if wk == "enum":
            return set(writer["symbols"]) <= set(reader["symbols"]) or "default" in reader
        if wk == "array":
            return _resolves(writer["items"], reader["items"])
        if wk == "map":
            return _resolves(writer["values"], reader["values"])
        if wk == "record":
            return not compatibility_problems(writer, reader)
    return True
