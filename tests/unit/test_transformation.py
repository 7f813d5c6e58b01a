"""Transformation rules as pure functions: what each makes of a value, the
order they run in, and the refusals of a bad list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.events import FieldValue
from tablesync.core.transformation import (
    LookupTable,
    Lowercase,
    RegexReplace,
    RemoveDiacritics,
    RemoveNonAlphanumeric,
    Replace,
    Round,
    Rule,
    RuleError,
    Substring,
    TitleCase,
    Trim,
    Uppercase,
    apply_rule,
    apply_rules,
    describe,
    parse_rules,
)

IDEMPOTENT: list[Rule] = [
    Uppercase(),
    Lowercase(),
    TitleCase(),
    Trim(),
    RemoveDiacritics(),
    RemoveNonAlphanumeric(),
]
texts = st.text(max_size=40)


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (Uppercase(), "Adatum Corp.", "ADATUM CORP."),
        (Lowercase(), "Adatum Corp.", "adatum corp."),
        (TitleCase(), "the o'neil  BIKE shop", "The O'neil  Bike Shop"),
        (Trim(), "  C10000 \t", "C10000"),
        (Substring(start=3, length=4), "AB1234XY", "1234"),
        (Substring(start=20), "short", ""),
        (Substring(start_text="-", end_text="/"), "DE-10115/Berlin", "10115"),
        (Substring(start_text="#"), "no marker", ""),
        (Substring(end_text="@"), "no at sign", "no at sign"),
        (Replace("Ltd.", "Limited"), "Fabrikam Ltd. Ltd.", "Fabrikam Limited Limited"),
        (RegexReplace(r"(\d{3})(\d{4})", r"\1-\2"), "call 5550100", "call 555-0100"),
        (RemoveDiacritics(), "Müller Ångström Çelik", "Muller Angstrom Celik"),
        (RemoveNonAlphanumeric(), "+1 (425) 555-0100", "14255550100"),
        (Round("0.01"), 2.345, 2.35),
        (Round("0.01"), -2.345, -2.35),
        (Round("10", "up"), 101, 110),
        (Round("10", "down"), 109, 100),
        (Round("0.5"), 7, 7),
        (LookupTable((("US", "United States"), ("DE", "Germany"))), "DE", "Germany"),
        (LookupTable((("US", "United States"),)), "FR", "FR"),
        (LookupTable((("US", "United States"),), "blank"), "FR", None),
        (LookupTable(((1, "one"),)), 1.0, "one"),
    ],
)
def test_each_rule(rule: Rule, value: FieldValue, expected: FieldValue) -> None:
    assert apply_rule(rule, value) == expected


@pytest.mark.parametrize("value", [None, 5, 2.5, True])
@pytest.mark.parametrize("rule", [*IDEMPOTENT, Substring(start=2), Replace("a", "b")])
def test_text_rules_leave_other_values_as_they_are(rule: Rule, value: FieldValue) -> None:
    assert apply_rule(rule, value) == value


@pytest.mark.parametrize("value", ["12.5", None, True])
def test_round_leaves_what_is_not_a_number(value: FieldValue) -> None:
    assert apply_rule(Round("1"), value) == value


@given(st.sampled_from(IDEMPOTENT), texts)
def test_rules_that_are_idempotent_in_bc_are_here(rule: Rule, value: str) -> None:
    once = apply_rule(rule, value)
    assert apply_rule(rule, once) == once


@given(
    st.sampled_from(["1", "0.01", "0.5", "5", "0.001"]),
    st.sampled_from(["nearest", "up", "down"]),
    st.decimals(min_value=-(10**6), max_value=10**6, places=4, allow_nan=False).map(float),
)
def test_round_is_idempotent_and_a_multiple_of_its_precision(
    precision: str, direction: str, value: float
) -> None:
    rule = Round(precision, direction)  # type: ignore[arg-type]
    once = apply_rule(rule, value)
    assert apply_rule(rule, once) == once
    assert isinstance(once, float)
    assert abs(once - value) <= float(precision) + 1e-9


@given(texts, st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=50))
def test_substring_stays_within_the_text(text: str, start: int, length: int) -> None:
    part = apply_rule(Substring(start=start, length=length), text)
    assert isinstance(part, str)
    assert len(part) <= length
    assert part == text[start - 1 : start - 1 + length]
    assert part in text


@given(texts)
def test_rules_run_in_the_order_listed(text: str) -> None:
    # Lower then replace "a" finds every A; the other way round only those already lower.
    rules: list[Rule] = [Lowercase(), Replace("a", "4")]
    assert apply_rules(rules, text) == text.lower().replace("a", "4")
    assert apply_rules(list(reversed(rules)), text) == text.replace("a", "4").lower()


def test_order_matters() -> None:
    value = "Banana"
    assert apply_rules([Lowercase(), Replace("b", "x")], value) == "xanana"
    assert apply_rules([Replace("b", "x"), Lowercase()], value) == "banana"


def test_a_list_parses_names_and_sets_of_keys_and_describes_them_back() -> None:
    rules = parse_rules(
        [
            "trim",
            {"type": "uppercase"},
            {"type": "substring", "start": 2, "length": 3},
            {"type": "replace", "find": "A", "replace_with": "B"},
            {"type": "regex_replace", "pattern": r"\s+", "replace_with": " "},
            {"type": "round", "precision": 0.05, "direction": "up"},
            {"type": "lookup_table", "pairs": [["US", "USA"], [1, None]], "unmatched": "blank"},
        ]
    )
    assert rules == (
        Trim(),
        Uppercase(),
        Substring(start=2, length=3),
        Replace("A", "B"),
        RegexReplace(r"\s+", " "),
        Round("0.05", "up"),
        LookupTable((("US", "USA"), (1, None)), "blank"),
    )
    assert describe(rules[2]) == {"type": "substring", "start": 2, "length": 3}
    assert describe(rules[6]) == {
        "type": "lookup_table",
        "pairs": [["US", "USA"], [1, None]],
        "unmatched": "blank",
    }
    assert parse_rules([describe(r) for r in rules]) == rules


@pytest.mark.parametrize(
    ("raw", "index", "key", "says"),
    [
        ("uppercase", -1, None, "a list of rules"),
        (["shout"], 0, "type", "unknown transformation rule 'shout'"),
        (["trim", 5], 1, None, "a rule is a rule's name"),
        ([{"type": "trim", "find": "x"}], 0, "find", "trim takes no parameters"),
        ([{"type": "regex_replace", "pattern": "(a"}], 0, "pattern", "not a regular expression"),
        (
            [{"type": "regex_replace", "pattern": "a", "replace_with": r"\1"}],
            0,
            "replace_with",
            "invalid group reference",
        ),
        ([{"type": "substring", "start": -1}], 0, "start", "1 or more; got -1"),
        ([{"type": "substring", "start": 0}], 0, "start", "1 or more; got 0"),
        ([{"type": "substring", "length": -3}], 0, "length", "0 or more"),
        ([{"type": "substring", "start": 1, "start_text": "x"}], 0, "start_text", "not both"),
        ([{"type": "replace"}], 0, "find", "find is required"),
        ([{"type": "replace", "find": ""}], 0, "find", "non-empty"),
        ([{"type": "round", "precision": 0}], 0, "precision", "positive number"),
        ([{"type": "round", "direction": "sideways"}], 0, "direction", "nearest, up, down"),
        ([{"type": "lookup_table", "pairs": {"US": "USA"}}], 0, "pairs", "list of [value"),
        ([{"type": "lookup_table", "pairs": [["US"]]}], 0, "pairs", "list of [value"),
        ([{"type": "lookup_table", "pairs": [["US", "A"], ["US", "B"]]}], 0, "pairs", "'US' more"),
        ([{"type": "lookup_table", "pairs": [], "unmatched": "drop"}], 0, "unmatched", "keep"),
    ],
)
def test_a_bad_rule_is_refused_naming_its_place(
    raw: object, index: int, key: str | None, says: str
) -> None:
    with pytest.raises(RuleError) as info:
        parse_rules(raw)
    assert (info.value.index, info.value.key) == (index, key)
    assert says in str(info.value)


def test_a_regex_rule_uses_pythons_syntax() -> None:
    (rule,) = parse_rules(
        [{"type": "regex_replace", "pattern": r"(?P<d>\d+)", "replace_with": "#"}]
    )
    assert apply_rule(rule, "a1b22") == "a#b#"
