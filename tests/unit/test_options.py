"""Option values between a BC enum and a Dataverse choice: through their pairs both ways,
a value without a pair refused, and the draft of an option map from the labels."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.events import FieldValue
from tablesync.core.fieldmap import same_value
from tablesync.core.metadata import Option
from tablesync.core.options import NoOption, label_key, propose, translate

names = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12)
ascii_names = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -", min_size=1
)
one_to_one = st.dictionaries(names, st.integers(0, 10**9), min_size=1, max_size=8).filter(
    lambda d: len(set(d.values())) == len(d)
)


def _equal(a: FieldValue, b: FieldValue) -> bool:
    return same_value(a, b)


@given(one_to_one)
def test_every_pair_travels_both_ways(option_map: dict[str, int]) -> None:
    pairs = tuple(option_map.items())
    for bc, dv in pairs:
        assert translate(pairs, bc, source="bc", equal=_equal) == dv
        assert translate(pairs, dv, source="dataverse", equal=_equal) == bc


@given(one_to_one, names)
def test_a_bc_value_without_a_pair_is_refused_with_the_value(
    option_map: dict[str, int], value: str
) -> None:
    pairs = tuple(option_map.items())
    if value in option_map:
        return
    assert translate(pairs, value, source="bc", equal=_equal) == NoOption(value)


@given(one_to_one, st.integers(0, 10**9))
def test_a_dataverse_value_without_a_pair_is_refused(
    option_map: dict[str, int], value: int
) -> None:
    pairs = tuple(option_map.items())
    if value in option_map.values():
        return
    assert translate(pairs, value, source="dataverse", equal=_equal) == NoOption(value)


@given(one_to_one, st.sampled_from([None, "", " "]))
def test_an_empty_value_without_a_pair_stays_empty(
    option_map: dict[str, int], empty: str | None
) -> None:
    pairs = tuple(option_map.items())
    assert translate(pairs, empty, source="bc", equal=_equal) is None
    assert translate(pairs, None, source="dataverse", equal=_equal) is None


def test_an_empty_value_with_a_pair_takes_it() -> None:
    pairs: tuple[tuple[FieldValue, FieldValue], ...] = ((" ", 0), ("High", 3))
    assert translate(pairs, " ", source="bc", equal=_equal) == 0
    assert translate(pairs, 0, source="dataverse", equal=_equal) == " "


def test_numbers_compare_by_value() -> None:
    for same in (1, 1.0, "1"):
        assert translate((("Low", 1),), same, source="dataverse", equal=_equal) == "Low"
    assert translate((("Low", 1),), 2, source="dataverse", equal=_equal) == NoOption(2)


@given(
    st.lists(ascii_names.filter(label_key), unique_by=label_key, max_size=8),
    st.randoms(use_true_random=False),
)
def test_options_with_the_same_labels_are_all_paired(labels: list[str], rnd: object) -> None:
    bc = [Option(label, label) for label in labels]
    dv = [Option(100_000_000 + i, label.upper()) for i, label in enumerate(labels)]
    shuffled = list(dv)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    proposal = propose(bc, shuffled)
    assert proposal.pairs == tuple((o.value, d.value) for o, d in zip(bc, dv, strict=True))
    assert proposal.bc_unpaired == proposal.dataverse_unpaired == ()


@given(st.lists(names, max_size=8), st.lists(names, max_size=8))
def test_a_proposal_is_one_to_one_and_accounts_for_every_option(
    bc_labels: list[str], dv_labels: list[str]
) -> None:
    bc = [Option(f"{label}{i}", label) for i, label in enumerate(bc_labels)]
    dv = [Option(i, label) for i, label in enumerate(dv_labels)]
    proposal = propose(bc, dv)
    bc_paired = [b for b, _ in proposal.pairs]
    dv_paired = [d for _, d in proposal.pairs]
    assert len(set(bc_paired)) == len(bc_paired) and len(set(dv_paired)) == len(dv_paired)
    assert sorted(map(str, bc_paired + [o.value for o in proposal.bc_unpaired])) == sorted(
        str(o.value) for o in bc
    )
    assert len(dv_paired) + len(proposal.dataverse_unpaired) == len(dv)
    labels = {o.value: o.label for o in [*bc, *dv]}
    for b, d in proposal.pairs:
        assert label_key(labels[b]) == label_key(labels[d])


def test_labels_pair_without_case_spaces_or_punctuation() -> None:
    proposal = propose(
        [Option("In_x0020_Progress", "In Progress"), Option("Closed", "Closed"), Option("X", "X")],
        [Option(1, "in-progress"), Option(2, "CLOSED"), Option(3, "Archived")],
    )
    assert proposal.pairs == (("In_x0020_Progress", 1), ("Closed", 2))
    assert proposal.bc_unpaired == (Option("X", "X"),)
    assert proposal.dataverse_unpaired == (Option(3, "Archived"),)
