"""Telling the record an announced create made from everyone else's."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.events import FieldValue
from tablesync.core.fieldmap import identifies, looks_sent, sent_values
from tablesync.core.plan import made_by
from tablesync.core.records import Ref, Row, WriteValue

_names = st.sampled_from(["number", "displayName", "city", "phoneNumber", "email", "creditLimit"])
_values: st.SearchStrategy[FieldValue] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.text(alphabet="abcXYZ 09-", max_size=12),
)
_payloads = st.dictionaries(_names, _values, max_size=6)


@given(_payloads, st.dictionaries(st.sampled_from(["id", "blocked", "balance"]), _values))
def test_the_record_a_create_made_looks_like_what_it_sent(
    sent: dict[str, FieldValue], extra: dict[str, FieldValue]
) -> None:
    # The destination adds fields of its own; what was sent is still there.
    assert looks_sent(sent, {**extra, **sent})


@given(_payloads)
def test_blank_values_sent_may_come_back_filled_in(sent: dict[str, FieldValue]) -> None:
    # A number series fills in a blank number; text may come back trimmed or in capitals.
    back: dict[str, FieldValue] = {
        k: ("C00010" if v is None or (isinstance(v, str) and not v.strip()) else v)
        for k, v in sent.items()
    }
    back = {k: v.strip().upper() if isinstance(v, str) else v for k, v in back.items()}
    assert looks_sent(sent, back)


@given(_payloads, _names, st.text(alphabet="klmn", min_size=1, max_size=5))
def test_a_different_value_is_someone_elses_record(
    sent: dict[str, FieldValue], name: str, other: str
) -> None:
    sent = {**sent, name: "Interrupted create"}
    assert not looks_sent(sent, {**sent, name: other})
    assert not looks_sent(sent, {k: v for k, v in sent.items() if k != name})


def test_an_intent_keeps_what_a_read_returns_under_the_same_names() -> None:
    payload: dict[str, WriteValue] = {
        "name": "Contoso",
        "creditlimit": 10,
        "transactioncurrencyid@odata.bind": Ref("transactioncurrencies", "0a1b"),
    }
    assert sent_values(payload) == {"name": "Contoso", "creditlimit": 10}


def test_an_intent_from_before_values_were_kept_matches_any_record() -> None:
    assert looks_sent({}, {"number": "10000"})


def _row(rid: str, **fields: FieldValue) -> Row:
    return Row(rid, datetime(2026, 1, 1, tzinfo=UTC), None, dict(fields))


def test_only_text_tells_a_record_apart() -> None:
    assert identifies({"number": "", "displayName": "Contoso"})
    assert not identifies({"number": "", "creditLimit": 0, "blocked": False})
    assert not identifies({"currencyId": "00000000-0000-0000-0000-000000000000"})
    assert not identifies({})


def test_the_record_a_create_made_is_the_only_look_alike() -> None:
    sent: dict[str, FieldValue] = {"number": "", "displayName": "Contoso", "city": "Oslo"}
    ours = _row("b", number="C00010", displayName="Contoso", city="OSLO")
    others = [_row("a", number="C00009", displayName="Fabrikam", city="Oslo")]
    assert made_by(sent, [*others, ours]) == ours
    # A user's identical record makes it ambiguous: neither is taken.
    twin = _row("c", number="C00011", displayName="Contoso", city="Oslo")
    assert made_by(sent, [*others, ours, twin]) is None
    # Nothing to tell it by: nothing is taken.
    assert made_by({"number": "", "creditLimit": 0}, [ours]) is None


@given(_payloads, st.lists(st.text(alphabet="pqr", min_size=1, max_size=4), max_size=5))
def test_a_record_found_always_looks_like_what_was_sent(
    sent: dict[str, FieldValue], names: list[str]
) -> None:
    rows = [
        _row(str(i), displayName=n, **{k: v for k, v in sent.items() if k != "displayName"})
        for i, n in enumerate(names)
    ]
    found = made_by(sent, rows)
    if found is not None:
        assert identifies(sent) and looks_sent(sent, found.fields)
        assert [r for r in rows if looks_sent(sent, r.fields)] == [found]
