"""What one batch changes in the state: the couplings it has made so far."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import BatchEffects, Intent, blocking, made_so_far, taken_over
from tests.strategies import apply_couplings

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _pair(bc: str, dv: str) -> Coupling:
    return Coupling("CUSTOMER", bc, dv, None, Stamp(T0, None), Stamp(T0, None))


def test_a_later_chunk_sees_the_couplings_an_earlier_one_made_and_removed() -> None:
    effects = BatchEffects("CUSTOMER")
    first, second, gone = _pair("b1", "d1"), _pair("b1", "d2"), _pair("b3", "d3")
    effects.couplings.extend([(first, "to_integration"), (second, None), (gone, None)])
    effects.uncoupled.append(gone)
    made = made_so_far(effects)
    assert made[("bc", "b1")] == second and made[("dataverse", "d2")] == second
    assert made[("bc", "b3")] is None and made[("dataverse", "d3")] is None


@given(st.lists(apply_couplings(), max_size=6), st.lists(st.integers(0, 5), max_size=3))
def test_a_removal_wins_over_any_coupling_of_the_batch(
    couplings: list[Coupling], removed: list[int]
) -> None:
    effects = BatchEffects("CUSTOMER")
    effects.couplings.extend((c, None) for c in couplings)
    effects.uncoupled.extend(couplings[n] for n in removed if n < len(couplings))
    made = made_so_far(effects)
    for c in effects.uncoupled:
        assert made[("bc", c.bc_id)] is None and made[("dataverse", c.dv_id)] is None
    named = {("bc", c.bc_id) for c in couplings} | {("dataverse", c.dv_id) for c in couplings}
    assert set(made) == named


@given(
    st.dictionaries(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3)), st.integers(1, 4)),
    st.dictionaries(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3)), st.integers(1, 4)),
)
def test_a_partition_is_held_only_under_its_current_epoch(
    held: dict[tuple[str, int], int], current: dict[tuple[str, int], int]
) -> None:
    lost = taken_over(held, current)
    assert lost == sorted(lost)
    assert set(lost) == {tp for tp in held if current.get(tp) != held[tp]}
    assert taken_over(current, current) == []


@given(
    number=st.text("ABCXYZ019-", min_size=1, max_size=8),
    other=st.text("ABCXYZ019-", min_size=1, max_size=8),
    name=st.text(min_size=1, max_size=10),
)
def test_a_record_holding_the_unique_key_an_unanswered_create_sent_is_held_back(
    number: str, other: str, name: str
) -> None:
    """Whatever else a user changed on it since: BC keeps numbers unique."""
    sent = {"number": number, "displayName": "As sent"}
    intents = [Intent("CUSTOMER", "dataverse", "d1", None, T0, sent=sent)]
    edited = {"number": number.lower(), "displayName": name + " by hand"}
    assert blocking(intents, [("b1", edited)], key="number") == {"b1"}
    assert blocking(intents, [("b1", edited)]) == set()
    elsewhere = {"number": other, "displayName": name + " by hand"}
    expected = {"b2"} if other.upper() == number.upper() else set()
    assert blocking(intents, [("b2", elsewhere)], key="number") == expected
    named = [Intent("CUSTOMER", "dataverse", "d1", "b9", T0, sent=sent)]
    assert blocking(named, [("b1", edited)], key="number") == set()
