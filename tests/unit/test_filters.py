"""The OData filter subset: parsing, canonical text, evaluation and its laws."""

from __future__ import annotations

import ast
import inspect
import itertools
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tablesync.core import filters as filters_module
from tablesync.core.filters import (
    MAX_DEPTH,
    MAX_LENGTH,
    And,
    Call,
    Compare,
    Expr,
    Func,
    Not,
    Op,
    Or,
    conjoin,
    disjoin,
    disjoined_within,
    evaluate,
    is_property_name,
    parse,
    properties,
    to_odata,
    validate_properties,
)
from tablesync.errors import FilterSyntaxError, MappingError
from tests.strategies import (
    filter_datetimes,
    filter_exprs,
    filter_literals,
    filter_property_names,
    filter_records,
    filter_texts,
    iso_datetime_text,
    mutated_filter_texts,
)

GUID = UUID("00000000-0000-0000-0000-000000000001")


def eq(prop: str, value: object) -> Compare:
    return Compare(prop, Op.EQ, value)  # type: ignore[arg-type]


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Business Central API v2.0 documentation
        (
            "lastModifiedDateTime gt 2019-01-01T00:00:00Z",
            Compare("lastModifiedDateTime", Op.GT, datetime(2019, 1, 1, tzinfo=UTC)),
        ),
        ("displayName eq 'Adatum'", eq("displayName", "Adatum")),
        ("blocked eq ' '", eq("blocked", " ")),
        ("postingDate ge 2023-01-01", Compare("postingDate", Op.GE, date(2023, 1, 1))),
        ("unitPrice lt 12.5", Compare("unitPrice", Op.LT, Decimal("12.5"))),
        # Dataverse Web API documentation
        ("contains(name,'(sample)')", Call(Func.CONTAINS, "name", "(sample)")),
        ("startswith(name,'a')", Call(Func.STARTSWITH, "name", "a")),
        ("endswith(name, 'Inc.')", Call(Func.ENDSWITH, "name", "Inc.")),
        (
            "statecode eq 0 and customertypecode eq 3",
            And(eq("statecode", 0), eq("customertypecode", 3)),
        ),
        ("_parentcustomerid_value ne null", Compare("_parentcustomerid_value", Op.NE, None)),
        ("_ownerid_value eq 00000000-0000-0000-0000-000000000001", eq("_ownerid_value", GUID)),
        (
            "accountid eq 0000000A-0000-0000-0000-00000000000B",
            eq("accountid", UUID(int=0xA << 96 | 0xB)),
        ),
        ("revenue ge -3", Compare("revenue", Op.GE, -3)),
        ("donotemail eq false", eq("donotemail", False)),
        ("name eq 'O''Brien'", eq("name", "O'Brien")),
        ("name eq ''''", eq("name", "'")),
        ("name eq ''", eq("name", "")),
        (
            "modifiedon lt 2023-01-01T10:00:00.123+02:00",
            Compare(
                "modifiedon",
                Op.LT,
                datetime(2023, 1, 1, 10, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2))),
            ),
        ),
        # .NET writes seven fractional digits; the seventh is below Python's resolution.
        (
            "modifiedon gt 2023-01-01T10:00:00.1234567Z",
            Compare("modifiedon", Op.GT, datetime(2023, 1, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ),
        (
            "modifiedon gt 2023-01-01T10:00-05:30",
            Compare(
                "modifiedon",
                Op.GT,
                datetime(2023, 1, 1, 10, 0, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            ),
        ),
        ("  a\teq\n1  ", eq("a", 1)),
        ("contains eq 'x'", eq("contains", "x")),
    ],
)
def test_parses_documented_examples(text: str, expected: Expr) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5 lt x", Compare("x", Op.GT, 5)),
        ("5 le x", Compare("x", Op.GE, 5)),
        ("5 gt x", Compare("x", Op.LT, 5)),
        ("5 ge x", Compare("x", Op.LE, 5)),
        ("'a' eq name", eq("name", "a")),
        ("null ne x", Compare("x", Op.NE, None)),
        ("2023-01-01 lt d", Compare("d", Op.GT, date(2023, 1, 1))),
    ],
)
def test_a_literal_on_the_left_is_moved_right_and_the_operator_flipped(
    text: str, expected: Expr
) -> None:
    assert parse(text) == expected


def test_the_position_of_a_flipped_comparison_is_the_property() -> None:
    node = parse("5 lt x")
    assert isinstance(node, Compare)
    assert node.pos == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a eq 1 or b eq 2 and c eq 3", Or(eq("a", 1), And(eq("b", 2), eq("c", 3)))),
        ("a eq 1 and b eq 2 or c eq 3", Or(And(eq("a", 1), eq("b", 2)), eq("c", 3))),
        ("(a eq 1 or b eq 2) and c eq 3", And(Or(eq("a", 1), eq("b", 2)), eq("c", 3))),
        ("not a eq 1 and b eq 2", And(Not(eq("a", 1)), eq("b", 2))),
        ("not (a eq 1 and b eq 2)", Not(And(eq("a", 1), eq("b", 2)))),
        ("not not a eq 1", Not(Not(eq("a", 1)))),
        ("a eq 1 and b eq 2 and c eq 3", And(And(eq("a", 1), eq("b", 2)), eq("c", 3))),
        ("a eq 1 or b eq 2 or c eq 3", Or(Or(eq("a", 1), eq("b", 2)), eq("c", 3))),
        ("a eq 1 or (b eq 2 or c eq 3)", Or(eq("a", 1), Or(eq("b", 2), eq("c", 3)))),
        ("((a eq 1))", eq("a", 1)),
        ("not contains(a,'x') or b eq 1", Or(Not(Call(Func.CONTAINS, "a", "x")), eq("b", 1))),
    ],
)
def test_precedence_is_not_then_comparison_then_and_then_or(text: str, expected: Expr) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contains(a,'x') eq true", Call(Func.CONTAINS, "a", "x")),
        ("contains(a,'x') ne false", Call(Func.CONTAINS, "a", "x")),
        ("contains(a,'x') eq false", Not(Call(Func.CONTAINS, "a", "x"))),
        ("contains(a,'x') ne true", Not(Call(Func.CONTAINS, "a", "x"))),
    ],
)
def test_a_function_compared_with_a_boolean_is_folded(text: str, expected: Expr) -> None:
    assert parse(text) == expected


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("", 0, "empty filter expression"),
        ("   ", 0, "empty filter expression"),
        ("name eq 'abc", 8, "unterminated string literal"),
        ("name eq 'O''Brien", 8, "unterminated string literal"),
        ("a == 1", 2, "unexpected character '='"),
        ('a eq "x"', 5, "strings are in single quotes"),
        (
            "a equals 1",
            2,
            "expected a comparison operator (eq, ne, gt, ge, lt, le), found 'equals'",
        ),
        ("a EQ 1", 2, "found 'EQ'"),
        ("a eq 1 AND b eq 2", 7, "expected 'and', 'or' or end of input, found 'AND'"),
        (
            "(a eq 1",
            7,
            "expected 'and', 'or' or ')' closing the '(' at position 0, found end of input",
        ),
        ("(a eq 1 b", 8, "closing the '(' at position 0, found 'b'"),
        ("a eq 1)", 6, "expected 'and', 'or' or end of input, found ')'"),
        ("a eq 1 b", 7, "expected 'and', 'or' or end of input, found 'b'"),
        ("a eq 1 and", 10, "expected an expression, found end of input"),
        ("and a eq 1", 0, "expected an expression, found 'and'"),
        ("a eq", 4, "expected a property name or literal, found end of input"),
        ("a eq and", 5, "expected a property name or literal, found 'and'"),
        ("a", 1, "expected a comparison operator"),
        ("a eq b", 5, "expected a literal to compare property 'a' with, found property 'b'"),
        ("1 eq 2", 0, "a comparison needs a property on one side"),
        ("id eq 00000000-0000-0000-0000-00000000001", 6, "invalid GUID literal"),
        ("id eq 00000000-0000-0000-0000-0000000000012", 6, "invalid GUID literal"),
        ("id eq abcdef00-0000-0000", 6, "invalid GUID literal starting 'abcdef00'"),
        ("id eq 0000000g-0000-0000-0000-000000000001", 6, "invalid literal"),
        ("d eq 2023-13-01", 5, "invalid Date literal '2023-13-01': month must be in 1..12"),
        ("d eq 0000-01-01", 5, "invalid Date literal"),
        ("d eq 2023-01-01T25:00:00Z", 5, "invalid DateTimeOffset literal"),
        ("d eq 2023-01-01T10:00:00", 5, "a time zone ('Z' or ±hh:mm) is required"),
        ("d eq 2023-01-01T10:00:00+24:00", 5, "invalid DateTimeOffset literal"),
        ("d eq 2023-01-01T10:00:00+01:60", 5, "offset minutes must be in 0..59"),
        ("d eq 2023-01-01T10:00:00.Z", 5, "invalid DateTimeOffset literal"),
        ("n eq 1e5", 5, "invalid literal '1e5'"),
        ("n eq 1.", 5, "invalid literal '1.'"),
        ("n eq 1_000", 5, "invalid literal '1_000'"),
        ("n eq - 1", 5, "unexpected character '-'"),
        ("n eq \u0661", 5, "unexpected character '\u0661'"),
        ("a-b eq 1", 1, "unexpected character '-'"),
        ("a/b eq 1", 1, "property paths are not supported"),
        ("contains('x',a)", 9, "expected a property name as the first argument of contains()"),
        ("contains(a,1)", 11, "expected a string literal as the second argument of contains()"),
        ("contains(a 'x')", 11, "expected ','"),
        ("contains(a,'x'", 14, "expected ')' closing contains("),
        ("contains(a,'x') eq 1", 19, "expected 'true' or 'false'"),
        ("not", 3, "expected an expression, found end of input"),
        ("()", 1, "expected an expression, found ')'"),
        ("a eq 1 & b eq 2", 7, "logical operators are and, or, not"),
    ],
)
def test_errors_name_what_was_expected_and_where(text: str, position: int, reason: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    assert caught.value.position == position
    assert reason in caught.value.reason
    assert caught.value.expression == text
    assert isinstance(caught.value, MappingError)


def test_nesting_deeper_than_the_limit_is_refused() -> None:
    inside = "(" * MAX_DEPTH + "a eq 1" + ")" * MAX_DEPTH
    assert parse(inside) == eq("a", 1)
    too_deep = "(" + inside + ")"
    with pytest.raises(FilterSyntaxError, match="nested deeper than 64 levels") as caught:
        parse(too_deep)
    assert caught.value.position == MAX_DEPTH


def test_not_counts_towards_the_nesting_limit() -> None:
    parse("not " * MAX_DEPTH + "a eq 1")
    with pytest.raises(FilterSyntaxError, match="nested deeper") as caught:
        parse("not " * (MAX_DEPTH + 1) + "a eq 1")
    assert caught.value.position == 4 * MAX_DEPTH


def test_text_longer_than_the_limit_is_refused() -> None:
    fits = "name eq '" + "x" * (MAX_LENGTH - 10) + "'"
    assert len(fits) == MAX_LENGTH
    parse(fits)
    with pytest.raises(FilterSyntaxError, match="longer than 4096") as caught:
        parse(fits + " ")
    assert caught.value.position == MAX_LENGTH


def test_the_longest_chain_evaluates_without_deep_recursion() -> None:
    text = " or ".join(["a eq 1"] * (MAX_LENGTH // 10))
    limit = sys.getrecursionlimit()
    # Head-room for this frame and the few below it, far less than the chain's length.
    sys.setrecursionlimit(len(inspect.stack()) + 30)
    try:
        expr = parse(text)
        matches, misses = evaluate(expr, {"a": 1}), evaluate(expr, {"a": 2})
        canonical = to_odata(expr)
        read = properties(expr)
    finally:
        sys.setrecursionlimit(limit)
    assert (matches, misses, read) == (True, False, frozenset({"a"}))
    assert canonical == text


def test_the_error_message_points_at_the_position() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse("a eq 1 b")
    assert str(caught.value).endswith("a eq 1 b\n       ^")


# ------------------------------------------------------------------ canonical text


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (eq("name", "O'Brien"), "name eq 'O''Brien'"),
        (eq("n", Decimal("1E+3")), "n eq 1000.0"),
        (eq("n", Decimal("-0.000001")), "n eq -0.000001"),
        (eq("n", Decimal("2")), "n eq 2.0"),
        (eq("n", -7), "n eq -7"),
        (eq("b", True), "b eq true"),
        (
            eq("g", UUID("ABCDEF00-0000-0000-0000-000000000001")),
            "g eq abcdef00-0000-0000-0000-000000000001",
        ),
        (eq("t", datetime(2023, 1, 1, 10, tzinfo=UTC)), "t eq 2023-01-01T10:00:00Z"),
        (
            eq("t", datetime(5, 1, 1, 10, 0, 0, 120000, tzinfo=timezone(-timedelta(minutes=90)))),
            "t eq 0005-01-01T10:00:00.12-01:30",
        ),
        (eq("d", date(2023, 1, 1)), "d eq 2023-01-01"),
        (Call(Func.ENDSWITH, "n", "it's"), "endswith(n,'it''s')"),
        (Not(Call(Func.CONTAINS, "n", "x")), "not contains(n,'x')"),
        (Not(eq("a", 1)), "not (a eq 1)"),
        (And(eq("a", 1), Or(eq("b", 2), eq("c", 3))), "a eq 1 and (b eq 2 or c eq 3)"),
        (Or(eq("a", 1), And(eq("b", 2), eq("c", 3))), "a eq 1 or (b eq 2 and c eq 3)"),
        (And(eq("a", 1), And(eq("b", 2), eq("c", 3))), "a eq 1 and (b eq 2 and c eq 3)"),
        (And(And(eq("a", 1), eq("b", 2)), eq("c", 3)), "a eq 1 and b eq 2 and c eq 3"),
    ],
)
def test_to_odata_writes_canonical_text(expr: Expr, text: str) -> None:
    assert to_odata(expr) == text
    assert parse(text) == expr


@pytest.mark.parametrize(
    "expr",
    [
        eq("a eq 1 or b", 1),
        eq("and", 1),
        eq("", 1),
        eq("n", Decimal("NaN")),
        eq("n", Decimal("Infinity")),
        eq("t", datetime(2023, 1, 1)),
        eq("t", datetime(2023, 1, 1, tzinfo=timezone(timedelta(seconds=30)))),
        Call(Func.CONTAINS, "a/b", "x"),
    ],
)
def test_to_odata_refuses_what_has_no_odata_spelling(expr: Expr) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the messages vary by case
        to_odata(expr)


def test_to_odata_refuses_a_value_of_another_type() -> None:
    with pytest.raises(TypeError):
        to_odata(eq("a", 1.5))


def test_equality_is_structural_and_strict_about_types() -> None:
    assert eq("a", 1) == eq("a", 1)
    assert hash(eq("a", 1)) == hash(eq("a", 1))
    assert eq("a", 1) != eq("a", True)
    assert eq("a", 1) != eq("a", Decimal(1))
    assert eq("a", 0) != eq("a", None)
    utc = datetime(2023, 1, 1, 10, tzinfo=UTC)
    assert eq("t", utc) != eq("t", utc.astimezone(timezone(timedelta(hours=2))))
    assert eq("d", date(2023, 1, 1)) != eq("d", datetime(2023, 1, 1, tzinfo=UTC))
    assert Compare("a", Op.EQ, 1, pos=3) == Compare("a", Op.EQ, 1, pos=9)
    assert Call(Func.CONTAINS, "a", "x", pos=1) == Call(Func.CONTAINS, "a", "x")
    assert len({eq("a", 1), eq("a", True), eq("a", 1)}) == 2


def test_is_property_name() -> None:
    assert is_property_name("_ownerid_value")
    assert is_property_name("lastModifiedDateTime")
    assert is_property_name("contains")
    assert not is_property_name("not")
    assert not is_property_name("1a")
    assert not is_property_name("a-b")
    assert not is_property_name("")


# ------------------------------------------------------------------ helpers


def test_properties_lists_every_property_read() -> None:
    expr = parse("a eq 1 and (not contains(b,'x') or 3 lt c)")
    assert properties(expr) == {"a", "b", "c"}
    assert properties(None) == frozenset()


def test_conjoin_and_combines_skipping_no_filter() -> None:
    a, b, c = eq("a", 1), eq("b", 2), eq("c", 3)
    assert conjoin() is None
    assert conjoin(None, None) is None
    assert conjoin(None, a) == a
    assert conjoin(a, None, b, c) == And(And(a, b), c)


def test_disjoin_or_combines_skipping_none() -> None:
    a, b, c = eq("a", 1), eq("b", 2), eq("c", 3)
    assert disjoin() is None
    assert disjoin(None, None) is None
    assert disjoin(None, a) == a
    assert disjoin(a, None, b, c) == Or(Or(a, b), c)


@given(st.lists(filter_exprs(max_depth=2), min_size=1, max_size=4), filter_records())
def test_disjoin_holds_where_any_alternative_holds(
    alternatives: list[Expr], record: dict[str, object]
) -> None:
    assert evaluate(disjoin(*alternatives), record) == any(
        evaluate(e, record) for e in alternatives
    )


def test_validate_properties_points_at_the_unknown_property() -> None:
    text = "name eq 'x' and 5 lt nmae"
    validate_properties(parse("name eq 'x'"), ["name"])
    validate_properties(None, [])
    with pytest.raises(FilterSyntaxError) as caught:
        validate_properties(parse(text), {"name"}, source=text)
    assert caught.value.position == 21
    assert caught.value.reason == "unknown property 'nmae'; did you mean 'name'?"


def test_validate_properties_without_source_names_the_property() -> None:
    with pytest.raises(MappingError, match="unknown property 'zzz'") as caught:
        validate_properties(And(eq("a", 1), Call(Func.CONTAINS, "zzz", "x")), {"a"})
    assert not isinstance(caught.value, FilterSyntaxError)


def test_the_module_stays_in_the_pure_core() -> None:
    tree = ast.parse(inspect.getsource(filters_module))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "tablesync"}


# ------------------------------------------------------------------ evaluation

MOMENT = "2023-06-01T12:00:00Z"


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("displayName eq 'Adatum'", {"displayName": "Adatum"}, True),
        ("displayName eq 'Adatum'", {"displayName": "adatum"}, False),
        ("displayName ne 'Adatum'", {"displayName": "adatum"}, True),
        ("blocked eq ' '", {"blocked": " "}, True),
        ("blocked eq ' '", {"blocked": ""}, False),
        ("statecode eq 0 and customertypecode eq 3", {"statecode": 0, "customertypecode": 3}, True),
        (
            "statecode eq 0 and customertypecode eq 3",
            {"statecode": 0, "customertypecode": 1},
            False,
        ),
        ("statecode eq 0 or customertypecode eq 3", {"statecode": 1, "customertypecode": 3}, True),
        # null: a missing key is null; eq/ne null work; ordering with null is false
        ("_parentcustomerid_value ne null", {"_parentcustomerid_value": None}, False),
        ("_parentcustomerid_value ne null", {}, False),
        ("_parentcustomerid_value eq null", {}, True),
        ("_parentcustomerid_value ne null", {"_parentcustomerid_value": "x"}, True),
        ("revenue gt 5", {"revenue": None}, False),
        ("revenue le 5", {}, False),
        ("revenue ne 5", {}, True),
        ("revenue eq 5", {}, False),
        ("revenue ge null", {"revenue": None}, False),
        ("revenue lt null", {"revenue": 1}, False),
        # numbers compare numerically whatever their Python type
        ("amount eq 12.5", {"amount": 12.5}, True),
        ("amount eq 0.1", {"amount": 0.1}, True),
        ("amount eq 12", {"amount": 12.0}, True),
        ("amount eq 12.00", {"amount": 12}, True),
        ("amount gt 12.5", {"amount": 13}, True),
        ("amount gt 12.5", {"amount": 12.5}, False),
        ("amount ge 12.5", {"amount": 12.5}, True),
        ("amount lt -3", {"amount": -3.5}, True),
        ("amount lt 5", {"amount": float("-inf")}, True),
        ("amount gt 5", {"amount": float("nan")}, False),
        ("amount eq 5", {"amount": float("nan")}, False),
        ("amount ne 5", {"amount": float("nan")}, True),
        ("amount eq 1", {"amount": True}, False),
        ("amount ne 1", {"amount": True}, True),
        ("amount eq 5", {"amount": "5"}, False),
        ("amount eq 5", {"amount": Decimal(5)}, True),
        # booleans: no numbers, no ordering
        ("flag eq true", {"flag": True}, True),
        ("flag eq false", {"flag": 0}, False),
        ("flag ne true", {"flag": False}, True),
        ("flag ge false", {"flag": True}, False),
        # datetimes: the record's ISO string is parsed and compared as an instant
        ("lastModifiedDateTime gt 2019-01-01T00:00:00Z", {"lastModifiedDateTime": MOMENT}, True),
        (
            "lastModifiedDateTime gt 2019-01-01T00:00:00Z",
            {"lastModifiedDateTime": "2018-12-31T23:59:59.9999999Z"},
            False,
        ),
        ("modifiedon eq 2023-06-01T14:00:00+02:00", {"modifiedon": MOMENT}, True),
        ("modifiedon eq 2023-06-01T12:00:00Z", {"modifiedon": "2023-06-01T12:00:00"}, True),
        (
            "modifiedon eq 2023-06-01T12:00:00Z",
            {"modifiedon": "2023-06-01T12:00:00.0000000Z"},
            True,
        ),
        (
            "modifiedon lt 2023-06-01T12:00:00Z",
            {"modifiedon": "2023-06-01T11:59:59.123-00:30"},
            False,
        ),
        ("modifiedon gt 2023-06-01T12:00:00Z", {"modifiedon": "not a date"}, False),
        ("modifiedon gt 2023-06-01T12:00:00Z", {"modifiedon": "2023-06-02"}, False),
        (
            "modifiedon le 2023-06-01T12:00:00Z",
            {"modifiedon": datetime(2023, 6, 1, 12, tzinfo=UTC)},
            True,
        ),
        # dates
        ("postingDate ge 2023-01-01", {"postingDate": "2023-01-01"}, True),
        ("postingDate lt 2023-01-01", {"postingDate": "2022-12-31"}, True),
        ("postingDate eq 2023-01-01", {"postingDate": "2023-01-01T00:00:00Z"}, False),
        ("postingDate eq 2023-01-01", {"postingDate": date(2023, 1, 1)}, True),
        ("postingDate eq 2023-01-01", {"postingDate": datetime(2023, 1, 1, tzinfo=UTC)}, False),
        # GUIDs compare case-insensitively; they have no order
        (
            "_ownerid_value eq 00000000-0000-0000-0000-00000000000a",
            {"_ownerid_value": "00000000-0000-0000-0000-00000000000A"},
            True,
        ),
        (
            "_ownerid_value eq 00000000-0000-0000-0000-00000000000A",
            {"_ownerid_value": "{00000000-0000-0000-0000-00000000000a}"},
            True,
        ),
        (
            "_ownerid_value ne 00000000-0000-0000-0000-00000000000a",
            {"_ownerid_value": "not a guid"},
            True,
        ),
        ("_ownerid_value eq 00000000-0000-0000-0000-000000000001", {"_ownerid_value": GUID}, True),
        (
            "_ownerid_value ge 00000000-0000-0000-0000-000000000001",
            {"_ownerid_value": str(GUID)},
            False,
        ),
        # strings
        ("name gt 'b'", {"name": "c"}, True),
        ("name gt 'b'", {"name": "B"}, False),
        ("name eq 'O''Brien'", {"name": "O'Brien"}, True),
        ("contains(name,'(sample)')", {"name": "Fourth Coffee (sample)"}, True),
        ("contains(name,'(sample)')", {"name": "Fourth Coffee"}, False),
        ("contains(name,'x')", {"name": None}, False),
        ("contains(name,'x')", {}, False),
        ("not contains(name,'x')", {}, True),
        ("startswith(name,'Four')", {"name": "Fourth Coffee"}, True),
        ("startswith(name,'four')", {"name": "Fourth Coffee"}, False),
        ("endswith(name,'ee')", {"name": "Fourth Coffee"}, True),
        ("contains(name,'1')", {"name": 1}, False),
        # mismatched types never raise: eq is false, ne is its negation
        ("name eq 'x'", {"name": ["x"]}, False),
        ("name ne 'x'", {"name": {"x": 1}}, True),
        ("amount gt 5", {"amount": [6]}, False),
    ],
)
def test_evaluate(text: str, record: dict[str, object], expected: bool) -> None:
    assert evaluate(parse(text), record) is expected


@pytest.mark.parametrize(
    ("text", "record"),
    [
        ("name eq 'ADATUM'", {"name": "adatum"}),
        ("not name ne 'ADATUM'", {"name": "adatum"}),
        ("contains(name,'SAMPLE')", {"name": "Coffee (sample)"}),
        ("startswith(name,'four')", {"name": "Fourth Coffee"}),
        ("endswith(name,'COFFEE')", {"name": "Fourth Coffee"}),
        ("name gt 'b'", {"name": "C"}),
        ("name eq 'STRASSE'", {"name": "straße"}),
    ],
)
def test_ignore_case_matches_a_case_insensitive_collation(
    text: str, record: dict[str, object]
) -> None:
    assert evaluate(parse(text), record, ignore_case=True)
    assert not evaluate(parse(text), record)


def test_no_filter_matches_everything() -> None:
    assert evaluate(None, {})
    assert evaluate(conjoin(None), {"a": 1})


# ------------------------------------------------------------------ properties


@given(filter_exprs())
@example(eq("n", Decimal("1E+3")))
@example(eq("t", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))))
def test_round_trip_through_canonical_text(expr: Expr) -> None:
    text = to_odata(expr)
    assert parse(text) == expr
    assert to_odata(parse(text)) == text


@given(filter_property_names(), st.sampled_from(Op), filter_literals())
def test_round_trip_of_every_property_name_and_literal(prop: str, op: Op, value: object) -> None:
    expr = Compare(prop, op, value)  # type: ignore[arg-type]
    assert parse(to_odata(expr)) == expr


def _parses_or_refuses(text: str) -> None:
    try:
        expr = parse(text)
    except FilterSyntaxError as caught:
        error = caught
    else:
        # Whatever parses has a canonical form that parses back to the same AST.
        assert parse(to_odata(expr)) == expr
        return
    assert 0 <= error.position <= len(text)
    assert error.expression == text[: MAX_LENGTH + 1]


@given(st.text())
@example("contains(")
@example("'")
@example("a eq 1" + ")" * 3)
@example("0000000-")
@example("a eq 9999-12-31T23:59:59.9999999-23:59")
def test_the_parser_only_ever_raises_filter_syntax_error(text: str) -> None:
    _parses_or_refuses(text)


@given(mutated_filter_texts())
def test_the_parser_only_ever_raises_filter_syntax_error_on_near_misses(text: str) -> None:
    _parses_or_refuses(text)


@given(filter_exprs(), filter_records(), st.booleans())
def test_evaluate_never_raises(expr: Expr, record: dict[str, object], ignore_case: bool) -> None:
    assert isinstance(evaluate(expr, record, ignore_case=ignore_case), bool)


@given(filter_exprs(), filter_records(), st.booleans())
def test_not_negates(expr: Expr, record: dict[str, object], ignore_case: bool) -> None:
    assert evaluate(Not(expr), record, ignore_case=ignore_case) is not evaluate(
        expr, record, ignore_case=ignore_case
    )


@given(filter_exprs(max_depth=2), filter_exprs(max_depth=2), filter_records())
def test_de_morgan(a: Expr, b: Expr, record: dict[str, object]) -> None:
    assert evaluate(Not(And(a, b)), record) == evaluate(Or(Not(a), Not(b)), record)
    assert evaluate(Not(Or(a, b)), record) == evaluate(And(Not(a), Not(b)), record)


@given(filter_exprs(), filter_records())
def test_ne_is_the_negation_of_eq(expr: Expr, record: dict[str, object]) -> None:
    for leaf in _compares(expr):
        flipped = Compare(leaf.prop, Op.NE if leaf.op is Op.EQ else Op.EQ, leaf.value)
        if leaf.op in (Op.EQ, Op.NE):
            assert evaluate(flipped, record) is not evaluate(leaf, record)


@given(filter_exprs(), filter_records())
def test_evaluation_survives_the_text_round_trip(expr: Expr, record: dict[str, object]) -> None:
    assert evaluate(parse(to_odata(expr)), record) == evaluate(expr, record)


@given(filter_texts())
def test_properties_are_what_validate_properties_accepts(text: str) -> None:
    expr = parse(text)
    validate_properties(expr, properties(expr), source=text)


@st.composite
def _same_typed(draw: st.DrawFn) -> tuple[object, object, object, object, bool]:
    """(literal, the record's JSON value, both as plain Python values, whether ordered)
    for one kind of value; the record value equals the literal about half the time."""
    kind = draw(st.sampled_from(["int", "float", "str", "datetime", "date", "guid", "bool"]))
    if kind == "int":
        v, w = draw(st.integers()), draw(st.integers())
        w = draw(st.sampled_from([v, w]))
        return v, w, v, w, True
    if kind == "float":
        f, g = draw(st.floats(allow_nan=False)), draw(st.floats(allow_nan=False))
        g = draw(st.sampled_from([f, g]))
        # The literal is the float's shortest text, as a client would have written it.
        return Decimal(repr(f)), g, f, g, True
    if kind == "str":
        s, t = draw(st.text(max_size=5)), draw(st.text(max_size=5))
        t = draw(st.sampled_from([s, t]))
        return s, t, s, t, True
    if kind == "datetime":
        a, b = draw(filter_datetimes), draw(filter_datetimes)
        b = draw(st.sampled_from([a, b]))
        return a, iso_datetime_text(b, draw(st.sampled_from([6, 7]))), a, b, True
    if kind == "date":
        d, e = draw(st.dates()), draw(st.dates())
        e = draw(st.sampled_from([d, e]))
        return d, e.isoformat(), d, e, True
    if kind == "guid":
        u, x = draw(st.uuids()), draw(st.uuids())
        x = draw(st.sampled_from([u, x]))
        return u, draw(st.sampled_from([str(x), str(x).upper()])), u, x, False
    p, q = draw(st.booleans()), draw(st.booleans())
    return p, q, p, q, False


@given(_same_typed(), st.sampled_from(Op))
def test_evaluate_agrees_with_python_on_values_of_one_type(
    case: tuple[object, object, object, object, bool], op: Op
) -> None:
    literal, raw, want, have, ordered = case
    outcome = {
        Op.EQ: have == want,
        Op.NE: have != want,
        Op.GT: ordered and have > want,  # type: ignore[operator]
        Op.GE: ordered and have >= want,  # type: ignore[operator]
        Op.LT: ordered and have < want,  # type: ignore[operator]
        Op.LE: ordered and have <= want,  # type: ignore[operator]
    }[op]
    assert evaluate(Compare("p", op, literal), {"p": raw}) is outcome  # type: ignore[arg-type]


def _compares(expr: Expr) -> list[Compare]:
    if isinstance(expr, Compare):
        return [expr]
    if isinstance(expr, Call):
        return []
    if isinstance(expr, Not):
        return _compares(expr.operand)
    return _compares(expr.left) + _compares(expr.right)


@given(
    st.lists(filter_exprs(max_depth=2), max_size=60),
    st.one_of(st.none(), filter_exprs(max_depth=2)),
    st.integers(min_value=40, max_value=600),
    st.one_of(st.none(), st.integers(min_value=1, max_value=8)),
)
def test_alternatives_are_chunked_within_the_length_limit(
    alternatives: list[Expr], within: Expr | None, limit: int, most: int | None
) -> None:
    chunks = disjoined_within(alternatives, lambda e: e, within=within, limit=limit, most=most)

    assert [e for chunk in chunks for e in chunk] == alternatives
    for chunk in chunks:
        query = conjoin(disjoin(*chunk), within)
        assert query is not None
        assert len(to_odata(query)) <= limit or len(chunk) == 1
        assert most is None or len(chunk) <= most
    for chunk, following in itertools.pairwise(chunks):
        if most is None or len(chunk) < most:
            # Cut only where one more would not fit, by the count kept.
            more = [*chunk, following[0]]
            counted = sum(len(to_odata(e)) + len("() or ") for e in more)
            base = len(to_odata(within)) + len("() and ()") if within is not None else 0
            assert base + counted > limit
