"""The order a full synchronization runs the mappings in, derived from them.

A mapping comes after every mapping its lookups resolve through (the coupled
record must exist on the other side before a record can refer to it) and
after every mapping named in its ``depends_on``, which adds edges the lookups
do not show (BC runs VENDOR before CUSTOMER because both write accounts).
Among mappings free to go, the document's order decides, so a document whose
``depends_on`` already spelled out an order keeps it."""

from __future__ import annotations

from collections.abc import Sequence

from tablesync.core.mappings import TableMapping
from tablesync.errors import MappingError

__all__ = ["dependencies", "dependency_order"]


def dependencies(m: TableMapping) -> tuple[str, ...]:
    """The mappings ``m`` must come after: its ``depends_on``, then its lookups'
    targets, each once, in the order written."""
    seen: dict[str, None] = dict.fromkeys(m.depends_on)
    for f in m.fields:
        if f.lookup is not None:
            seen.update(dict.fromkeys(f.lookup.mappings))
    return tuple(seen)


def dependency_order(mappings: Sequence[TableMapping]) -> tuple[TableMapping, ...]:
    """A topological order of ``mappings``; ties keep the given order.

    ``MappingError`` names a ``depends_on`` entry that is no mapping, and a
    cycle, written as the path that closes it (``A -> B -> A``). A lookup
    through a mapping that is not there adds no edge: the reference check
    names it with the field it is on."""
    by_name = {m.name: m for m in mappings}
    for m in mappings:
        for dep in m.depends_on:
            if dep not in by_name:
                raise MappingError(
                    f"depends on unknown mapping {dep!r}",
                    mapping=m.name,
                    field="depends_on",
                    path=("mappings", m.name, "depends_on"),
                )
            if dep == m.name:
                raise MappingError(
                    "a mapping cannot depend on itself",
                    mapping=m.name,
                    field="depends_on",
                    path=("mappings", m.name, "depends_on"),
                )
    needs = {m.name: tuple(d for d in dependencies(m) if d in by_name) for m in mappings}
    ordered: list[TableMapping] = []
    done: set[str] = set()
    while len(ordered) < len(mappings):
        ready = next(
            (m for m in mappings if m.name not in done and all(d in done for d in needs[m.name])),
            None,
        )
        if ready is None:
            cycle = _cycle([m.name for m in mappings if m.name not in done], needs, done)
            raise MappingError(
                f"the mappings' lookups and depends_on form a cycle: {' -> '.join(cycle)}",
                mapping=cycle[0],
                field="depends_on",
                path=("mappings", cycle[0], "depends_on"),
            )
        ordered.append(ready)
        done.add(ready.name)
    return tuple(ordered)


def _cycle(stuck: list[str], needs: dict[str, tuple[str, ...]], done: set[str]) -> list[str]:
    """A cycle among ``stuck``: each of them waits on another one of them, so
    walking from any along unmet needs must come back to a name seen before."""
    path = [stuck[0]]
    at: dict[str, int] = {stuck[0]: 0}
    while True:
        nxt = next(d for d in needs[path[-1]] if d not in done)
        if nxt in at:
            return [*path[at[nxt] :], nxt]
        at[nxt] = len(path)
        path.append(nxt)
