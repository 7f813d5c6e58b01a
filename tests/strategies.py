"""Hypothesis strategies shared by the unit, contract and emulator tests.

Each section belongs to one module under test; add new sections rather than
growing someone else's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import strategies as st

from tablesync.core.capture_rules import Seen
from tablesync.core.couplings import Coupling, Stamp
from tablesync.core.effects import DueRecord, Intent
from tablesync.core.events import FieldValue, RecordChanged, Side
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
from tablesync.core.plan import (
    Create,
    Decision,
    Fail,
    Ignore,
    MarkDeleted,
    Pending,
    Remove,
    Restore,
    Skip,
    Unchanged,
    Uncouple,
    Update,
)
from tablesync.core.records import Missing, Rejected, Row, Stale, WriteResult, Written
from tablesync.core.retry import RetryPolicy

__all__ = [
    "APPLY_FIELDS",
    "CAPTURE_IDS",
    "FILTER_PROPERTIES",
    "apply_couplings",
    "apply_decisions",
    "apply_events",
    "apply_intents",
    "apply_rows",
    "apply_stamps",
    "capture_id_sets",
    "capture_rows",
    "capture_seen",
    "due_records",
    "failure_messages",
    "filter_datetimes",
    "filter_exprs",
    "filter_literals",
    "filter_property_names",
    "filter_record_values",
    "filter_records",
    "filter_texts",
    "iso_datetime_text",
    "mutated_filter_texts",
    "retry_policies",
    "write_results",
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


# ---------------------------------------------------------------------------
# Apply rules: tablesync.core.retry, outcome, coupling_rules, recovery, counting
# ---------------------------------------------------------------------------

APPLY_FIELDS: tuple[str, ...] = ("number", "displayName", "city", "name", "accountnumber")
"""Field names of both sides of CUSTOMER, few enough that records share them."""

_sides: st.SearchStrategy[Side] = st.sampled_from(["bc", "dataverse"])
_ids = st.uuids().map(str)
_moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)
_etags = st.one_of(st.none(), st.integers(1, 10**6).map(lambda n: f'W/"{n}"'))
_values: st.SearchStrategy[FieldValue] = st.one_of(
    st.none(), st.integers(-5, 5), st.text(alphabet="abcXYZ 09", max_size=8)
)
_messages = st.sampled_from(
    ["Customer 10000 already exists.", "The currency is blocked.", "lookup not coupled yet"]
)


def apply_stamps() -> st.SearchStrategy[Stamp]:
    return st.builds(Stamp, st.one_of(st.none(), _moments), _etags)


def apply_rows() -> st.SearchStrategy[Row]:
    """Records as a side returns them."""
    return st.builds(
        Row, _ids, _moments, _etags, st.dictionaries(st.sampled_from(APPLY_FIELDS), _values)
    )


def apply_events(side: Side | None = None) -> st.SearchStrategy[RecordChanged]:
    """Changed CUSTOMER records of either side (or of ``side``), upserts or deletions."""
    sides = st.just(side) if side is not None else _sides

    def build(
        s: Side, rid: str, op: str, at: datetime, fields: dict[str, FieldValue], etag: str | None
    ) -> RecordChanged:
        return RecordChanged(
            side=s,
            table="customers" if s == "bc" else "accounts",
            record_id=rid,
            op=op,  # type: ignore[arg-type]
            modified_at=at,
            captured_at=at,
            fields=fields,
            etag=etag,
        )

    return st.builds(
        build,
        sides,
        _ids,
        st.sampled_from(["upsert", "upsert", "delete"]),
        _moments,
        st.dictionaries(st.sampled_from(APPLY_FIELDS), _values),
        _etags,
    )


def apply_couplings(mapping: str = "CUSTOMER") -> st.SearchStrategy[Coupling]:
    return st.builds(
        Coupling,
        st.just(mapping),
        _ids,
        _ids,
        st.one_of(st.none(), st.text(alphabet="C0123", min_size=1, max_size=6)),
        apply_stamps(),
        apply_stamps(),
        st.booleans(),
        st.booleans(),
    )


def apply_intents(mapping: str = "CUSTOMER") -> st.SearchStrategy[Intent]:
    return st.builds(
        Intent,
        st.just(mapping),
        _sides,
        _ids,
        st.one_of(st.none(), _ids),
        _moments,
        st.dictionaries(st.sampled_from(APPLY_FIELDS), _values, max_size=3),
    )


def failure_messages() -> st.SearchStrategy[str]:
    """API error messages, some ending in the correlation id BC makes new on every response."""
    correlation = st.uuids().map(lambda u: f"  CorrelationId:  {u}.")
    return st.builds(lambda m, c: m + c, _messages, st.one_of(st.just(""), correlation))


def apply_decisions(mapping: str = "CUSTOMER") -> st.SearchStrategy[Decision]:
    """Every kind of decision the rules make, with plausible contents."""
    payloads = st.dictionaries(st.sampled_from(APPLY_FIELDS), _values, max_size=3)
    couplings = apply_couplings(mapping)
    return st.one_of(
        st.builds(Ignore, st.just("outside the mapping's filter")),
        st.builds(Unchanged, st.one_of(st.none(), couplings)),
        st.builds(Pending, failure_messages()),
        st.builds(Fail, failure_messages(), st.booleans()),
        st.builds(Skip, failure_messages(), st.booleans()),
        st.builds(Create, _sides, payloads, st.none(), _ids, apply_stamps()),
        st.builds(
            Create,
            _sides,
            payloads,
            _ids,
            _ids,
            apply_stamps(),
            matched=apply_rows(),
            recovered=st.booleans(),
        ),
        st.builds(Update, _sides, _ids, payloads, _etags, couplings),
        st.builds(Remove, _sides, _ids, couplings),
        st.builds(Restore, _sides, payloads, st.one_of(st.none(), _ids), couplings),
        st.builds(
            Uncouple,
            couplings,
            failure_messages(),
            st.sampled_from([(), ("bc",), ("dataverse",), ("bc", "dataverse")]),
        ),
        st.builds(MarkDeleted, couplings, failure_messages()),
    )


def write_results() -> st.SearchStrategy[WriteResult]:
    """Every answer a side gives to a write, with the statuses the APIs use."""
    return st.one_of(
        st.builds(Written, st.one_of(st.none(), apply_rows())),
        st.builds(
            Rejected,
            st.sampled_from([0, 400, 403, 404, 408, 409, 412, 423, 429, 500, 502, 503]),
            _messages,
        ),
        st.builds(Missing, st.sampled_from(["", "Not found"])),
        st.builds(Stale, st.just("")),
    )


def due_records(mapping: str = "CUSTOMER") -> st.SearchStrategy[DueRecord]:
    """A record's listing before this attempt, as the state database holds it."""
    return st.builds(
        DueRecord,
        st.just(mapping),
        _sides,
        _ids,
        st.sampled_from(["pending", "failed", "skipped"]),
        failure_messages(),
        st.integers(1, 40),
        st.integers(0, 12),
        st.just(b"event"),
    )


def retry_policies() -> st.SearchStrategy[RetryPolicy]:
    return st.builds(
        RetryPolicy,
        st.integers(1, 10),
        st.floats(0.1, 60, allow_nan=False),
        st.floats(1, 3600, allow_nan=False),
    )


# ---------------------------------------------------------------------------
# Capture: tablesync.core.capture_rules
# ---------------------------------------------------------------------------

CAPTURE_IDS: tuple[str, ...] = tuple(f"00000000-0000-0000-0000-{n:012d}" for n in range(12))
"""A small pool of record ids, so that listings, couplings and reads overlap."""

_capture_ids = st.sampled_from(CAPTURE_IDS)
_capture_moments = st.integers(0, 40).map(
    lambda s: datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=s)
)
_capture_versions = st.integers(1, 4).map(lambda n: f'W/"{n}"')


def capture_rows() -> st.SearchStrategy[Row]:
    """Rows read by a poll or a reconcile: few ids, few versions, nearby stamps."""
    return st.builds(Row, _capture_ids, _capture_moments, st.one_of(st.none(), _capture_versions))


def capture_seen() -> st.SearchStrategy[dict[str, Seen]]:
    """What capture remembers publishing, by id."""
    return st.dictionaries(
        _capture_ids,
        st.builds(Seen, _capture_versions, _capture_moments),
    )


def capture_synced() -> st.SearchStrategy[dict[str, Stamp]]:
    """The stamps one mapping's couplings keep on a side, by id: near the rows' own."""
    return st.dictionaries(
        _capture_ids,
        st.builds(
            Stamp,
            st.one_of(st.none(), _capture_moments),
            st.one_of(st.none(), _capture_versions),
        ),
    )


def capture_id_sets() -> st.SearchStrategy[set[str]]:
    return st.sets(_capture_ids)
