"""A partition's events in lanes: every event of a record in one lane, in
the order the partition gave them, and lanes only for a partition with many."""

from __future__ import annotations

import uuid
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from tablesync.core.events import RecordChanged
from tablesync.core.plan import JobContext
from tablesync.runtime import apply
from tablesync.runtime.applier import Item
from tests.strategies import apply_events

_JOB = JobContext(job_id=None, kind="continuous")


def _items(records: list[int], ids: list[str], template: Item) -> list[Item]:
    return [
        replace(template, event=replace(template.event, record_id=ids[r]), offset=offset)
        for offset, r in enumerate(records)
    ]


@given(
    apply_events(side="bc"),
    st.lists(st.integers(0, 39), min_size=0, max_size=1200),
    st.booleans(),
)
def test_a_records_events_stay_in_one_lane_in_order(
    event: RecordChanged, records: list[int], upper: bool
) -> None:
    ids = [str(uuid.UUID(int=n + 1)) for n in range(40)]
    template = Item(event, b"", _JOB, "t", 0, 0)
    items = _items(records, ids, template)
    if upper:
        # The same record however its id is spelt.
        items = [
            replace(i, event=replace(i.event, record_id=i.event.record_id.upper()))
            if i.offset is not None and i.offset % 2
            else i
            for i in items
        ]

    lanes = apply._lanes(items)

    assert sorted(i.offset or 0 for lane in lanes for i in lane) == list(range(len(items)))
    assert len(lanes) <= max(1, min(apply._LANES_MOST, len(items) // apply._LANE_LEAST))
    lane_of: dict[str, int] = {}
    for n, lane in enumerate(lanes):
        offsets = [i.offset or 0 for i in lane]
        assert offsets == sorted(offsets)
        for i in lane:
            assert lane_of.setdefault(i.event.record_id.lower(), n) == n


@given(apply_events(side="bc"), st.integers(0, 2 * apply._LANE_LEAST - 1))
def test_a_partition_with_few_events_is_one_lane(event: RecordChanged, count: int) -> None:
    template = Item(event, b"", _JOB, "t", 0, 0)
    items = [replace(template, offset=n) for n in range(count)]

    assert apply._lanes(items) == [items]
