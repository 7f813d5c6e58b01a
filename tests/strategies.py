"""Hypothesis strategies shared by the unit, contract and emulator tests.

Each section belongs to one module under test; add new sections rather than
growing someone else's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import strategies as st

from tablesync.core.filters import (
    And,
    Call,
    Compare,
    Expr,
    Func,
    LiteralValue,
    Not,
    Op,
    Or,
    is_property_name,
    to_odata,
)

__all__ = [
    "FILTER_PROPERTIES",
    "filter_datetimes",
    "filter_exprs",
    "filter_literals",
    "filter_property_names",
    "filter_record_values",
    "filter_records",
    "filter_texts",
    "iso_datetime_text",
    "mutated_filter_texts",
]

# ---------------------------------------------------------------------------
# Filters: tablesync.core.filters
# ---------------------------------------------------------------------------

FILTER_PROPERTIES: tuple[str, ...] = (
    "name",
    "statecode",
    "amount",
    "blocked",
    "accountid",
    "lastModifiedDateTime",
    "postingDate",
    "_ownerid_value",
)
"""A small pool, so that generated filters and records share keys and actually match."""


def filter_property_names() -> st.SearchStrategy[str]:
    """Any valid property name, keywords excluded."""
    return st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,30}\Z").filter(is_property_name)


_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: UTC if minutes == 0 else timezone(timedelta(minutes=minutes))
)
filter_datetimes = st.datetimes(timezones=_offsets)
"""Tz-aware datetimes with whole-minute offsets, the ones OData can write."""


def filter_literals() -> st.SearchStrategy[LiteralValue]:
    """Every kind of literal the grammar has, as the parser would produce it."""
    return st.one_of(
        st.text(max_size=20),
        st.integers(),
        st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**9), max_value=10**9),
        st.booleans(),
        st.none(),
        st.uuids(),
        filter_datetimes,
        st.dates(),
    )


def filter_exprs(
    props: st.SearchStrategy[str] | None = None,
    *,
    literals: st.SearchStrategy[LiteralValue] | None = None,
    max_depth: int = 4,
) -> st.SearchStrategy[Expr]:
    """Filter ASTs at most ``max_depth`` operators deep.

    The depth is bounded explicitly (not with ``st.recursive``) so that every generated
    tree stays inside the parser's nesting limit and round-trips through text."""
    props = props if props is not None else st.sampled_from(FILTER_PROPERTIES)
    literals = literals if literals is not None else filter_literals()
    leaf: st.SearchStrategy[Expr] = st.one_of(
        st.builds(Compare, props, st.sampled_from(Op), literals),
        st.builds(Call, st.sampled_from(Func), props, st.text(max_size=10)),
    )
    if max_depth <= 0:
        return leaf
    sub = filter_exprs(props, literals=literals, max_depth=max_depth - 1)
    return st.one_of(
        leaf,
        st.builds(Not, sub),
        st.builds(And, sub, sub),
        st.builds(Or, sub, sub),
    )


def iso_datetime_text(moment: datetime, fraction_digits: int = 0) -> str:
    """``moment`` the way the APIs write it: Z for UTC, no offset when naive."""
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if fraction_digits:
        # Business Central writes seven fractional digits (.NET ticks).
        text += "." + f"{moment.microsecond:06d}0"[:fraction_digits]
    offset = moment.utcoffset()
    if offset is None:
        return text
    if not offset:
        return text + "Z"
    minutes = int(offset / timedelta(minutes=1))
    sign = "-" if minutes < 0 else "+"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def filter_record_values() -> st.SearchStrategy[object]:
    """What a record's field may hold: JSON values in the shapes BC and Dataverse send,
    plus values no API sends (NaN, lists, objects) that evaluate must still survive."""
    guid_texts = st.uuids().flatmap(lambda u: st.sampled_from([str(u), str(u).upper()]))
    datetime_texts = st.builds(
        iso_datetime_text,
        st.one_of(filter_datetimes, st.datetimes()),
        st.sampled_from([0, 3, 6, 7]),
    )
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        guid_texts,
        datetime_texts,
        st.dates().map(date.isoformat),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        filter_literals(),
    )


def filter_records(
    props: Sequence[str] = FILTER_PROPERTIES,
) -> st.SearchStrategy[dict[str, object]]:
    """Records over ``props``; keys may be missing, which counts as null."""
    return st.dictionaries(st.sampled_from(props), filter_record_values())


def filter_texts() -> st.SearchStrategy[str]:
    """Valid filter text in canonical form."""
    return filter_exprs().map(to_odata)


_MUTATION_ALPHABET = "()',-.:+/ eqnotandor0123456789TZaf_x\"="


@st.composite
def mutated_filter_texts(draw: st.DrawFn) -> str:
    """Valid filter text with a few characters deleted, inserted or replaced: text that is
    nearly right, which is where a hand-written parser breaks."""
    text = draw(filter_texts())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        kind = draw(st.sampled_from(["delete", "insert", "replace"]))
        if kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
        else:
            piece = draw(st.text(alphabet=_MUTATION_ALPHABET, min_size=1, max_size=4))
            skip = len(piece) if kind == "replace" else 0
            text = text[:at] + piece + text[at + skip :]
    return text
