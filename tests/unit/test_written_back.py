"""Telling tablesync's own write, read back after a crash, from a user's change."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import assume, given
from hypothesis import strategies as st

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.events import FieldValue, RecordChanged
from tablesync.core.fieldmap import (
    Mapped,
    echo_of_earlier_write,
    map_values,
    not_written_back,
    written_image,
)
from tablesync.core.plan import Skip, Unchanged, Update, decide_coupled
from tablesync.core.records import Row

_, MAPPINGS = load_mapping_file(default_mapping_file())
CUSTOMER = MAPPINGS.get("CUSTOMER")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 20, 10, 5, tzinfo=UTC)
T2 = datetime(2026, 11, 20, 10, 9, tzinfo=UTC)
BC_ID = "11111111-1111-1111-1111-111111111111"
DV_ID = "22222222-2222-2222-2222-222222222222"

# Both directions' text fields of CUSTOMER, as each side names them.
_PAIRS = [
    ("displayName", "name"),
    ("city", "address1_city"),
    ("phoneNumber", "telephone1"),
    ("email", "emailaddress1"),
]
_text = st.text(alphabet="abcXYZ 09", min_size=1, max_size=8).map(str.strip).filter(bool)


def _dataverse(values: dict[str, FieldValue]) -> dict[str, FieldValue]:
    return {"accountnumber": "C1", "statecode": 0, "customertypecode": 3, **values}


def _bc(values: dict[str, FieldValue]) -> dict[str, FieldValue]:
    return {"number": "C1", "blocked": " ", "creditLimit": 0, **values}


def _to_bc(fields: dict[str, FieldValue]) -> Mapped:
    return map_values(CUSTOMER, "from_integration", fields, {}, MAPPINGS, creating=False)


def _to_dataverse(fields: dict[str, FieldValue]) -> Mapped:
    return map_values(CUSTOMER, "to_integration", fields, {}, MAPPINGS, creating=False)


def _bc_event(fields: dict[str, FieldValue]) -> RecordChanged:
    return RecordChanged(
        side="bc",
        table="customers",
        record_id=BC_ID,
        op="upsert",
        modified_at=T1,
        captured_at=T1,
        fields=fields,
        etag='W/"bc-1"',
    )


def _coupling() -> Coupling:
    return Coupling("CUSTOMER", BC_ID, DV_ID, "C1", Stamp(T0, 'W/"bc-0"'), Stamp(T0, 'W/"10"'))


@st.composite
def _crashed_writes(
    draw: st.DrawFn,
) -> tuple[dict[str, FieldValue], dict[str, FieldValue], dict[str, FieldValue]]:
    """BC as it was, the Dataverse change tablesync wrote to it (v1), and the
    account's later change (v2), every field of v2 differing from v1's."""
    before = {bc: draw(_text) for bc, _ in _PAIRS}
    v1 = {dv: draw(_text) for _, dv in _PAIRS}
    v2 = {dv: draw(_text.filter(lambda t, old=v1[dv]: t != old)) for _, dv in _PAIRS}  # type: ignore[misc]
    return before, v1, v2


@given(_crashed_writes())
def test_the_echo_of_a_write_whose_commit_was_lost_never_wins_a_conflict(
    case: tuple[dict[str, FieldValue], dict[str, FieldValue], dict[str, FieldValue]],
) -> None:
    before, v1, v2 = case
    bc_before = _bc(before)
    image = written_image(CUSTOMER, "bc", _to_bc(_dataverse(v1)), bc_before)
    # What BC holds once v1 is written: the echo capture reads back.
    echo = {**bc_before, **{k: v for k, v in image.items() if k in bc_before or v is not None}}
    account_now = Row(DV_ID, T2, 'W/"12"', _dataverse(v2))

    mapped = not_written_back(_to_dataverse(echo), "bc", echo, [image])
    decision = decide_coupled(_bc_event(echo), CUSTOMER, _coupling(), account_now, mapped)

    # BC wins conflicts in CUSTOMER: without the image, v1 would overwrite v2.
    assert isinstance(decision, Unchanged), decision
    unfiltered = decide_coupled(
        _bc_event(echo), CUSTOMER, _coupling(), account_now, _to_dataverse(echo)
    )
    assert isinstance(unfiltered, Update)


@given(_crashed_writes(), st.sampled_from(_PAIRS), _text)
def test_a_users_change_after_the_write_still_syncs(
    case: tuple[dict[str, FieldValue], dict[str, FieldValue], dict[str, FieldValue]],
    pair: tuple[str, str],
    edited: str,
) -> None:
    before, v1, v2 = case
    bc_field, dv_field = pair
    bc_before = _bc(before)
    image = written_image(CUSTOMER, "bc", _to_bc(_dataverse(v1)), bc_before)
    assume(edited not in (image[bc_field], v2[dv_field]))  # a change the account lacks
    # The user edits one BC field after tablesync's write: only that one is theirs.
    echo = {**bc_before, **{k: v for k, v in image.items() if v is not None}, bc_field: edited}
    account_now = Row(DV_ID, T2, 'W/"12"', _dataverse(v2))

    mapped = not_written_back(_to_dataverse(echo), "bc", echo, [image])
    decision = decide_coupled(_bc_event(echo), CUSTOMER, _coupling(), account_now, mapped)

    assert isinstance(decision, Update), decision
    assert decision.payload == {dv_field: edited}


@given(_crashed_writes())
def test_with_no_write_announced_every_value_is_the_users(
    case: tuple[dict[str, FieldValue], dict[str, FieldValue], dict[str, FieldValue]],
) -> None:
    before, _, _ = case
    fields = _bc(before)
    mapped = _to_dataverse(fields)
    assert not_written_back(mapped, "bc", fields, []) == mapped


def test_a_field_left_as_it_was_is_not_the_users_either() -> None:
    # creditLimit flows only BC -> Dataverse: a write from Dataverse leaves it as
    # it was, and a value as it was is no change to sync back.
    bc_before = _bc({"displayName": "Old", "creditLimit": 500})
    image = written_image(CUSTOMER, "bc", _to_bc(_dataverse({"name": "New"})), bc_before)
    assert image["creditLimit"] == 500 and image["displayName"] == "New"
    echo = {**bc_before, "displayName": "New"}
    mapped = not_written_back(_to_dataverse(echo), "bc", echo, [image])
    assert mapped.values == ()
    account_now = Row(DV_ID, T2, 'W/"12"', _dataverse({"name": "Newer", "creditlimit": 0}))
    decision = decide_coupled(_bc_event(echo), CUSTOMER, _coupling(), account_now, mapped)
    assert isinstance(decision, Unchanged)
    # A conflict the user made is still one: BC's own credit limit change wins.
    edited = {**echo, "creditLimit": 900}
    mapped = not_written_back(_to_dataverse(edited), "bc", edited, [image])
    decision = decide_coupled(_bc_event(edited), CUSTOMER, _coupling(), account_now, mapped)
    assert isinstance(decision, Update) and decision.payload == {"creditlimit": 900}
    assert not isinstance(decision, Skip)


@given(
    _crashed_writes(),
    st.lists(
        st.dictionaries(st.sampled_from([dv for _, dv in _PAIRS]), _text, min_size=1),
        min_size=1,
        max_size=3,
    ),
)
def test_the_echo_of_a_write_before_the_latest_is_told_from_the_latests(
    case: tuple[dict[str, FieldValue], dict[str, FieldValue], dict[str, FieldValue]],
    later: list[dict[str, FieldValue]],
) -> None:
    """Several updates of one BC record announced, none committed: what each
    left on the record, read back, is an earlier write's echo unless it is
    also what the latest left."""
    before, v1, _ = case
    state = _bc(before)
    images: list[dict[str, FieldValue]] = []
    echoes: list[dict[str, FieldValue]] = []
    for change in [v1, *later]:
        image = written_image(CUSTOMER, "bc", _to_bc(_dataverse(change)), state)
        state = {**state, **image}
        images.append(image)
        echoes.append(dict(state))
    for echo in echoes[:-1]:
        earlier = echo_of_earlier_write(CUSTOMER, "bc", echo, images)
        assert earlier == (not _same_fields(echo, images[-1])), (echo, images)
    assert not echo_of_earlier_write(CUSTOMER, "bc", echoes[-1], images)
    assert not echo_of_earlier_write(CUSTOMER, "bc", echoes[0], images[:1])


def _same_fields(fields: dict[str, FieldValue], image: dict[str, FieldValue]) -> bool:
    return all(fields.get(name) == value for name, value in image.items())
