"""Match-based coupling: which uncoupled record of the other side is the same
record, by the mapping's match fields (BC's "couple by match").

A record takes part only when every match field holds some text. Values
compare trimmed, and the way BC compares Code fields (ignoring case) unless
the match field is case sensitive. The side is asked for the candidates of
many records at once (``match_query``; as many a query as its text has room
for, ``match_chunks``); each record then keeps those that equal it on every
field (``matches``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tablesync.core import filters
from tablesync.core.events import FieldValue, Side
from tablesync.core.fieldmap import same_value
from tablesync.core.mappings import TableMapping

__all__ = [
    "equal_match",
    "match_chunks",
    "match_fields",
    "match_query",
    "match_values",
    "matches",
]


def match_fields(mapping: TableMapping, side: Side) -> tuple[str, ...]:
    """The names of the mapping's match fields on ``side``."""
    return tuple(m.bc if side == "bc" else m.dataverse for m in mapping.match)


def match_values(
    mapping: TableMapping, side: Side, fields: Mapping[str, FieldValue]
) -> tuple[str, ...] | None:
    """A record's match values (trimmed), or None when one of them is blank."""
    values = tuple(_text(fields.get(name)) for name in match_fields(mapping, side))
    return values if all(values) else None


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
    """Whether a record of ``side`` read as ``fields`` has the match ``values``."""
    return all(
        equal_match(fields.get(name), v, m.case_sensitive)
        for name, v, m in zip(match_fields(mapping, side), values, mapping.match, strict=True)
    )


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
    alternative = filters.conjoin(
        *(filters.Compare(f, filters.Op.EQ, v) for f, v in zip(names, values, strict=True))
    )
    assert alternative is not None
    return alternative


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
