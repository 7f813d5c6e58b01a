"""Match-based coupling: which uncoupled record of the other side is the same
record, by the mapping's match fields (BC's "couple by match").

Match fields of one priority form a group whose fields must all be equal;
the groups are tried from the lowest priority on and the first that finds
records decides (BC's Match Priority). A group takes part only when every one
of its fields holds some text, a record only when one of its groups does.
Values compare trimmed, and the way BC compares Code fields (ignoring case)
unless the match field is case sensitive. The side is asked for the
candidates of many records at once (``match_query``; as many a query as its
text has room for, ``match_chunks``); each record then keeps those its first
group that finds any finds (``best_matches``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from tablesync.core import filters
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import same_value
from tablesync.core.mappings import MatchField, TableMapping
from tablesync.core.records import Row

__all__ = [
    "best_matches",
    "equal_match",
    "match_chunks",
    "match_fields",
    "match_groups",
    "match_query",
    "match_values",
    "matches",
]

R = TypeVar("R", bound=Row)


def match_fields(mapping: TableMapping, side: Side) -> tuple[str, ...]:
    """The names of the mapping's match fields on ``side``."""
    return tuple(m.bc if side == "bc" else m.dataverse for m in mapping.match)


def match_groups(mapping: TableMapping) -> tuple[tuple[int, ...], ...]:
    """The positions in ``mapping.match`` of each group of one priority, the
    lowest priority first."""
    priorities = sorted({m.priority for m in mapping.match})
    return tuple(
        tuple(n for n, m in enumerate(mapping.match) if m.priority == p) for p in priorities
    )


def match_values(
    mapping: TableMapping, side: Side, fields: Mapping[str, FieldValue]
) -> tuple[str, ...] | None:
    """A record's match values (trimmed, blank where the field is), or None
    when every group has a blank field: the record cannot be matched."""
    values = tuple(_text(fields.get(name)) for name in match_fields(mapping, side))
    return values if _usable(mapping, values) else None


def equal_match(value: object, wanted: str, case_sensitive: bool) -> bool:
    """Whether a candidate's field ``value`` equals the match value ``wanted``."""
    if not isinstance(value, str):
        return False
    if case_sensitive:
        return value.strip() == wanted
    return same_value(value, wanted, code=True)


def matches(
    mapping: TableMapping, side: Side, fields: Mapping[str, FieldValue], values: Sequence[str]
) -> bool:
    """Whether a record of ``side`` read as ``fields`` has the match ``values``
    in some group that can be used."""
    return any(_group_matches(mapping, side, fields, values, g) for g in _usable(mapping, values))


def best_matches(
    mapping: TableMapping, side: Side, rows: Sequence[R], values: Sequence[str]
) -> tuple[R, ...]:
    """The records of ``side`` among ``rows`` a record with the match ``values``
    matches: those of its first usable group, by priority, that finds any."""
    for group in _usable(mapping, values):
        found = tuple(r for r in rows if _group_matches(mapping, side, r.fields, values, group))
        if found:
            return found
    return ()


def match_query(mapping: TableMapping, side: Side, keys: Sequence[Sequence[str]]) -> filters.Expr:
    """The query for the records of ``side`` that may match any of ``keys``
    (match values, at least one), within the mapping's filter of that side.
    Equality asks the side for candidates only: how it compares text (case,
    padding) is its own, so ``matches`` decides which are the record's."""
    assert keys, "a match query needs at least one record's values"
    alternatives = [_alternative(mapping, side, values) for values in keys]
    query = filters.conjoin(filters.disjoin(*alternatives), mapping.filter(side))
    assert query is not None
    return query


def match_chunks(
    mapping: TableMapping, side: Side, keys: Sequence[Sequence[str]]
) -> list[list[int]]:
    """The positions in ``keys`` asked for together, one ``match_query`` each:
    as many records a query as its text leaves room for, however long their
    values are (a record whose values make too long a query is asked alone)."""
    return filters.disjoined_within(
        range(len(keys)),
        lambda n: _alternative(mapping, side, keys[n]),
        within=mapping.filter(side),
    )


def _alternative(mapping: TableMapping, side: Side, values: Sequence[str]) -> filters.Expr:
    names = match_fields(mapping, side)
    alternative = filters.disjoin(
        *(
            filters.conjoin(*(filters.Compare(names[n], filters.Op.EQ, values[n]) for n in group))
            for group in _usable(mapping, values)
        )
    )
    assert alternative is not None
    return alternative


def _usable(mapping: TableMapping, values: Sequence[str]) -> list[tuple[int, ...]]:
    return [g for g in match_groups(mapping) if all(values[n] for n in g)]


def _group_matches(
    mapping: TableMapping,
    side: Side,
    fields: Mapping[str, FieldValue],
    values: Sequence[str],
    group: tuple[int, ...],
) -> bool:
    names = match_fields(mapping, side)
    match: tuple[MatchField, ...] = mapping.match
    return all(equal_match(fields.get(names[n]), values[n], match[n].case_sensitive) for n in group)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
