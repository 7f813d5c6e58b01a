"""Capture publishes and checkpoints page by page, and a row too large for
the log goes to the dead-letter topic (id, size, limit; never its values)
while its table goes on. On virtual time, on in-memory ports."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka.errors import KafkaConnectionError

from tablesync.composition import topics_for
from tablesync.core.decision import event_of
from tablesync.core.records import Row
from tablesync.ports.log import Message, Publisher, message_size
from tests.capturing import CUSTOMERS, Deployment, deployment, on_virtual_time


def _event_size(d: Deployment, row: Row) -> int:
    event = event_of(row, "bc", CUSTOMERS)
    return message_size(Message("t", row.id.encode(), d.codec.encode(event)))


def test_a_row_over_the_size_limit_is_dead_lettered_and_its_table_goes_on() -> None:
    async def body() -> None:
        d = await deployment()
        secret = "confidential " * 10
        before = d.side.user_create(CUSTOMERS, {"displayName": "Before"})
        big = d.side.user_create(
            CUSTOMERS,
            {
                "displayName": secret[:100],
                "addressLine1": secret[:100],
                "email": secret[:80],
                "website": secret[:80],
            },
        )
        after = d.side.user_create(CUSTOMERS, {"displayName": "After"})
        # A limit between the others' size and the big one's.
        limit = (_event_size(d, before) + _event_size(d, big)) // 2
        assert _event_size(d, after) < limit < _event_size(d, big)
        d.broker.max_message_bytes = limit
        stop = asyncio.Event()
        running = asyncio.ensure_future(d.capture().run(stop))
        await d.until(lambda: bool(d.events_of(after.id)), within_s=30)
        later = d.side.user_create(CUSTOMERS, {"displayName": "Later"})
        await d.until(lambda: bool(d.events_of(later.id)), within_s=30)
        stop.set()
        await running

        assert [len(d.events_of(r.id)) for r in (before, big, after, later)] == [1, 0, 1, 1]
        assert d.database.t.checkpoints[("bc", CUSTOMERS)].watermark >= later.modified_at
        [letter] = d.broker.records(topics_for(d.settings).deadletter)
        headers = dict(letter.headers)
        assert letter.key == big.id.encode() and letter.value == b""
        assert headers["ts.record_id"] == big.id.encode()
        assert int(headers["ts.size"]) == _event_size(d, big)
        assert int(headers["ts.limit"]) == limit
        assert headers["ts.topic"] == topics_for(d.settings).cdc("bc", CUSTOMERS).encode()
        assert b"confidential" not in b"".join(v for _, v in letter.headers)

    on_virtual_time(body)


class _FailsOnce:
    """A log whose Nth publish of change events fails, as a broker that went away."""

    def __init__(self, inner: Publisher, fail_at: int) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.calls = 0

    async def publish(self, message: Message) -> tuple[int, int]:
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Iterable[Message]) -> list[tuple[int, int]]:
        batch = list(messages)
        if any(m.topic.startswith(("cdc.", "sim.cdc.")) for m in batch):
            self.calls += 1
            if self.calls == self.fail_at:
                raise KafkaConnectionError("the broker went away")
        return await self.inner.publish_many(batch)

    async def partitions_for(self, topic: str) -> list[int]:
        return await self.inner.partitions_for(topic)


def test_capture_checkpoints_each_page_once_it_is_published() -> None:
    async def body() -> None:
        d = await deployment(page_size=2)
        publisher = _FailsOnce(d.broker.publisher(), fail_at=2)
        stop = asyncio.Event()
        capture = d.capture(publisher=publisher)
        running = asyncio.ensure_future(capture.run(stop))
        await d.until(lambda: ("bc", CUSTOMERS) in d.database.t.checkpoints, within_s=30)
        # Five rows changed between two polls: three pages of one read.
        rows = []
        for n in range(5):
            rows.append(d.side.user_create(CUSTOMERS, {"displayName": f"Customer {n}"}))
            await asyncio.sleep(0.01)
        await d.until(lambda: publisher.calls >= 2, within_s=30)
        # The second page failed: the first one's rows are published and checkpointed.
        watermark = d.database.t.checkpoints[("bc", CUSTOMERS)].watermark
        assert watermark == rows[1].modified_at
        await d.until(lambda: all(d.events_of(r.id) for r in rows), within_s=30)
        stop.set()
        await running
        assert d.database.t.checkpoints[("bc", CUSTOMERS)].watermark == rows[-1].modified_at

    on_virtual_time(body)
