"""What CLI commands open, and close again: the state database and the
operator's operations on it, with Kafka and the sides' APIs opened only by
the commands that use them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher, Message
from tablesync.adapters.postgres import migrate, postgres_stores
from tablesync.adapters.postgres.pool import create_pool
from tablesync.application import Operator
from tablesync.composition import SideApis, build_operator, tables_for_mappings
from tablesync.settings import Settings

__all__ = ["open_operator", "state_pool"]


@contextlib.asynccontextmanager
async def state_pool(settings: Settings) -> AsyncIterator[Any]:
    await migrate(settings.database_dsn())
    pool = await create_pool(settings.database_dsn(), max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


class _PublisherOnDemand:
    """The commands topic's publisher, connected on the first publish: a
    command that requests no run never needs the broker."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self._kafka = kafka
        self._publisher: KafkaPublisher | None = None

    async def publish(self, message: Message) -> tuple[int, int]:
        if self._publisher is None:
            publisher = KafkaPublisher(self._kafka, client_id="tablesync-cli")
            await publisher.start()
            self._publisher = publisher
        return await self._publisher.publish(message)

    async def stop(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None


@contextlib.asynccontextmanager
async def open_operator(settings: Settings) -> AsyncIterator[Operator]:
    """The operator's operations, as every CLI command that reads or changes state uses them."""
    async with state_pool(settings) as pool:
        kafka = KafkaConnection.from_settings(settings)
        publisher = _PublisherOnDemand(kafka)
        stores = postgres_stores(pool)
        apis = SideApis(settings, described=await tables_for_mappings(settings, stores))
        try:
            yield build_operator(settings, stores, apis=apis, publisher=publisher, kafka=kafka)
        finally:
            await apis.aclose()
            await publisher.stop()
