"""Figures over repeated runs (min / median / max), the printed table and the
JSON file of each bench. Targets are printed beside the figures; a missed
target is reported, never raised."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Figure", "Result", "Target", "aggregate", "render_table", "write_result"]


@dataclass(frozen=True, slots=True)
class Target:
    text: str
    met: Callable[[float], bool]


@dataclass(frozen=True, slots=True)
class Figure:
    """How one measured value is named, shown and judged."""

    key: str
    label: str
    unit: str
    digits: int = 0
    target: Target | None = None


def at_least(limit: float, text: str) -> Target:
    return Target(text, lambda v: v >= limit)


def at_most(limit: float, text: str) -> Target:
    return Target(text, lambda v: v <= limit)


@dataclass
class Result:
    name: str
    figures: list[Figure]
    runs: list[dict[str, Any]]
    """One entry per repetition: ``figures`` (key -> value) and its details."""
    context: dict[str, Any]

    def values(self, key: str) -> list[float]:
        return [r["figures"][key] for r in self.runs if r["figures"].get(key) is not None]

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for f in self.figures:
            values = self.values(f.key)
            entry = aggregate(values)
            entry.update({"label": f.label, "unit": f.unit})
            if f.target is not None:
                entry["target"] = f.target.text
                # Judged on the median: one lucky or unlucky run does not decide.
                entry["meets_target"] = (
                    f.target.met(entry["median"]) if entry["median"] is not None else None
                )
            out[f.key] = entry
        return out


def aggregate(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"min": None, "median": None, "max": None, "values": [], "runs": 0}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "values": list(values),
        "runs": len(values),
    }


def _number(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render_table(result: Result) -> str:
    summary = result.summary()
    header = ("figure", "unit", "min", "median", "max", "target", "")
    rows: list[tuple[str, ...]] = [header]
    for f in result.figures:
        s = summary[f.key]
        verdict = ""
        if "meets_target" in s and s["meets_target"] is not None:
            verdict = "met" if s["meets_target"] else "NOT met"
        rows.append(
            (
                f.label,
                f.unit,
                _number(s["min"], f.digits),
                _number(s["median"], f.digits),
                _number(s["max"], f.digits),
                s.get("target", ""),
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = {2, 3, 4}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in numeric and index else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    runs = len(result.runs)
    title = f"== {result.name} ({runs} run{'s' if runs != 1 else ''}) =="
    if _engine_changed(result):
        title += "  [the engine's code changed between runs: they do not compare]"
    return "\n".join([title, *lines])


def _engine_changed(result: Result) -> bool:
    engines = {json.dumps(r["engine"], sort_keys=True) for r in result.runs if "engine" in r}
    return len(engines) > 1


def write_result(result: Result, directory: Path, *, smoke: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (f"{result.name}.smoke.json" if smoke else f"{result.name}.json")
    payload = {
        "bench": result.name,
        "smoke": smoke,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        # Runs of one bench compare only when they ran the same engine.
        "engine_changed_between_runs": _engine_changed(result),
        **result.context,
        "figures": result.summary(),
        "runs": result.runs,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
