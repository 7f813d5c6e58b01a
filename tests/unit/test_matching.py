"""Match-based coupling: which uncoupled record of the other side is the same record."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core import filters
from tablesync.core.events import FieldValue, Side, other_side
from tablesync.core.fieldmap import same_value
from tablesync.core.mappings import MatchField
from tablesync.core.matching import (
    best_matches,
    equal_match,
    match_chunks,
    match_fields,
    match_groups,
    match_query,
    match_values,
    matches,
)
from tablesync.core.records import Row

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
SIDES: st.SearchStrategy[Side] = st.sampled_from(["bc", "dataverse"])
_codes = st.text(alphabet="cC0123 -", min_size=1, max_size=8).filter(lambda t: t.strip())
# Within CUSTOMER's filter on each side.
IN_FILTER: dict[Side, dict[str, FieldValue]] = {
    "bc": {"blocked": " "},
    "dataverse": {"statecode": 0, "customertypecode": 3},
}


def test_the_match_fields_are_named_per_side() -> None:
    assert match_fields(CUSTOMER, "bc") == ("number",)
    assert match_fields(CUSTOMER, "dataverse") == ("accountnumber",)


@given(SIDES, st.one_of(st.none(), st.integers(), st.text(alphabet=" C1", max_size=4)))
def test_a_record_takes_part_only_with_text_in_every_match_field(
    side: Side, value: FieldValue
) -> None:
    name = match_fields(CUSTOMER, side)[0]
    values = match_values(CUSTOMER, side, {name: value})
    if isinstance(value, str) and value.strip():
        assert values == (value.strip(),)
    else:
        assert values is None


@pytest.mark.parametrize(
    ("value", "wanted", "case_sensitive", "equal"),
    [
        ("C10000", "C10000", False, True),
        (" c10000 ", "C10000", False, True),
        ("c10000", "C10000", True, False),
        (" C10000", "C10000", True, True),
        ("C10001", "C10000", False, False),
        (10000, "10000", False, False),
        (None, "C1", False, False),
    ],
)
def test_equal_match(value: object, wanted: str, case_sensitive: bool, equal: bool) -> None:
    assert equal_match(value, wanted, case_sensitive) == equal


@given(SIDES, _codes, st.booleans())
def test_a_record_matches_its_own_values_in_any_case(side: Side, code: str, upper: bool) -> None:
    values = match_values(CUSTOMER, side, {match_fields(CUSTOMER, side)[0]: code})
    assert values is not None
    dest = other_side(side)
    name = match_fields(CUSTOMER, dest)[0]
    shown = code.upper() if upper else code.lower()
    assert matches(CUSTOMER, dest, {name: f" {shown} "}, values)
    sensitive = replace(CUSTOMER, match=(MatchField("number", "accountnumber", True),))
    assert matches(sensitive, dest, {name: shown}, values) == (shown.strip() == code.strip())


@given(SIDES, st.lists(_codes, min_size=1, max_size=5), st.data())
def test_the_query_finds_every_records_candidates_within_the_filter(
    side: Side, codes: list[str], data: st.DataObject
) -> None:
    keys = [(c.strip(),) for c in codes]
    query = match_query(CUSTOMER, side, keys)
    name = match_fields(CUSTOMER, side)[0]
    ignore_case = side == "dataverse"
    for (code,) in keys:
        record = {**IN_FILTER[side], name: code}
        assert filters.evaluate(query, record, ignore_case=ignore_case)
        # Out of the mapping's filter on that side: never a candidate.
        outside = {**record, **({"blocked": "All"} if side == "bc" else {"statecode": 1})}
        assert not filters.evaluate(query, outside, ignore_case=ignore_case)
    other = data.draw(_codes.map(str.strip).filter(lambda c: all(c != k for (k,) in keys)))
    assert not filters.evaluate(query, {**IN_FILTER[side], name: other})


def test_a_query_needs_some_record() -> None:
    with pytest.raises(AssertionError):
        match_query(CUSTOMER, "bc", [])


_long_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=120
).filter(lambda t: t.strip())


@given(SIDES, st.lists(_long_values, min_size=1, max_size=120))
def test_match_queries_are_chunked_by_the_length_of_their_text(
    side: Side, values: list[str]
) -> None:
    keys = [(v.strip(),) for v in values]

    chunks = match_chunks(CUSTOMER, side, keys)

    assert [n for chunk in chunks for n in chunk] == list(range(len(keys)))
    for chunk in chunks:
        text = filters.to_odata(match_query(CUSTOMER, side, [keys[n] for n in chunk]))
        assert len(text) <= filters.MAX_LENGTH or len(chunk) == 1
        assert filters.parse(text) == match_query(CUSTOMER, side, [keys[n] for n in chunk])
    for chunk, following in itertools.pairwise(chunks):
        # Each chunk as full as the text allows: one more record would outgrow it
        # (give or take the few characters the count is ahead).
        more = match_query(CUSTOMER, side, [keys[n] for n in [*chunk, following[0]]])
        assert len(filters.to_odata(more)) > filters.MAX_LENGTH - 8 * len(chunk) - 16


def test_records_with_long_values_get_fewer_to_a_query() -> None:
    short = [(f"C{n:05d}",) for n in range(300)]
    long = [("O''Brien & Sons " * 6 + f"{n:05d}",) for n in range(300)]

    assert len(match_chunks(CUSTOMER, "dataverse", short)) == 3
    assert len(match_chunks(CUSTOMER, "dataverse", long)) > 10
    # A record whose values alone outgrow the limit is asked for alone.
    huge = [("a",), ("x" * filters.MAX_LENGTH,), ("b",)]
    assert match_chunks(CUSTOMER, "bc", huge) == [[0], [1], [2]]


# CUSTOMER matched by number first and, where that finds nothing, by name and city.
BY_PRIORITY = replace(
    CUSTOMER,
    match=(
        MatchField("displayName", "name", priority=2),
        MatchField("number", "accountnumber", priority=1),
        MatchField("city", "address1_city", priority=2),
    ),
)
_words = st.sampled_from(["", "a", "b", "A"])
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _row(n: int, fields: dict[str, FieldValue]) -> Row:
    return Row(f"00000000-0000-0000-0000-{n:012d}", T0, f'W/"{n}"', fields)


def test_match_groups_come_lowest_priority_first() -> None:
    assert match_groups(BY_PRIORITY) == ((1,), (0, 2))
    assert match_groups(CUSTOMER) == ((0,),)


def test_the_first_group_that_finds_records_decides() -> None:
    dest: Side = "dataverse"
    by_number = _row(1, {"accountnumber": "C1", "name": "Other", "address1_city": "X"})
    by_name = _row(2, {"accountnumber": "C9", "name": "Fabrikam", "address1_city": "Oslo"})
    values = match_values(
        BY_PRIORITY, "bc", {"number": "C1", "displayName": "Fabrikam", "city": "Oslo"}
    )
    assert values is not None
    assert best_matches(BY_PRIORITY, dest, [by_name, by_number], values) == (by_number,)
    # The number finds nothing: name and city, together, decide.
    assert best_matches(BY_PRIORITY, dest, [by_name], values) == (by_name,)
    # A blank number leaves only the second group; a blank city, none at all.
    unnumbered = match_values(BY_PRIORITY, "bc", {"displayName": "Fabrikam", "city": "Oslo"})
    assert unnumbered is not None
    assert best_matches(BY_PRIORITY, dest, [by_name, by_number], unnumbered) == (by_name,)
    assert match_values(BY_PRIORITY, "bc", {"displayName": "Fabrikam"}) is None


@given(
    st.fixed_dictionaries({"number": _words, "displayName": _words, "city": _words}),
    st.lists(
        st.fixed_dictionaries({"accountnumber": _words, "name": _words, "address1_city": _words}),
        max_size=6,
    ),
)
def test_best_matches_are_the_first_usable_groups_and_the_query_asks_for_them(
    record: dict[str, FieldValue], accounts: list[dict[str, FieldValue]]
) -> None:
    rows = [_row(n, {**IN_FILTER["dataverse"], **a}) for n, a in enumerate(accounts)]
    values = match_values(BY_PRIORITY, "bc", record)
    groups = [
        [f for f in BY_PRIORITY.match if f.priority == p]
        for p in sorted({f.priority for f in BY_PRIORITY.match})
    ]
    usable = [g for g in groups if all(str(record[f.bc]).strip() for f in g)]
    if not usable:
        assert values is None
        return
    assert values is not None
    expected: tuple[Row, ...] = ()
    for group in usable:
        expected = tuple(
            r
            for r in rows
            if all(same_value(r.fields[f.dataverse], record[f.bc], code=True) for f in group)
        )
        if expected:
            break
    found = best_matches(BY_PRIORITY, "dataverse", rows, values)
    assert found == expected
    # The side is asked for every record any usable group would find.
    query = match_query(BY_PRIORITY, "dataverse", [values])
    for r in rows:
        assert filters.evaluate(query, r.fields, ignore_case=True) == matches(
            BY_PRIORITY, "dataverse", r.fields, values
        )
    assert all(matches(BY_PRIORITY, "dataverse", r.fields, values) for r in found)
