"""What CLI commands that touch the state or the topics open, and close again."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import KafkaPublisher
from tablesync.adapters.odata import open_api
from tablesync.adapters.postgres import migrate, postgres_stores
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.composition import topics_for
from tablesync.core.events import Side
from tablesync.ports.api import SideApi
from tablesync.ports.clock import SystemClock
from tablesync.runtime.actions import Actions
from tablesync.runtime.operations import Operations
from tablesync.settings import Settings

__all__ = ["CliContext", "state_pool", "with_actions", "with_operations"]


@contextlib.asynccontextmanager
async def state_pool(settings: Settings) -> AsyncIterator[Any]:
    await migrate(settings.database_dsn())
    pool = await create_pool(settings.database_dsn(), max_size=3)
    try:
        yield pool
    finally:
        await pool.close()


@dataclass
class CliContext:
    pool: Any
    operations: Operations


@contextlib.asynccontextmanager
async def with_operations(settings: Settings) -> AsyncIterator[CliContext]:
    async with state_pool(settings) as pool:
        publisher = KafkaPublisher(settings.kafka_bootstrap_servers, client_id="tablesync-cli")
        await publisher.start()
        try:
            ops = Operations(
                JobStore(pool), publisher, Codec(), topics_for(settings), SystemClock()
            )
            yield CliContext(pool, ops)
        finally:
            await publisher.stop()


@contextlib.asynccontextmanager
async def with_actions(settings: Settings) -> AsyncIterator[Actions]:
    """The recovery actions, with both sides' APIs open."""
    async with state_pool(settings) as pool:
        apis: dict[Side, SideApi] = {}
        try:
            apis["bc"] = await open_api("bc", settings.bc)
            apis["dataverse"] = await open_api("dataverse", settings.dataverse)
            mappings = await MappingStore(pool).load()
            yield Actions(
                stores=postgres_stores(pool),
                apis=apis,
                mappings=mappings,
                settings=settings.sync,
                codec=Codec(),
                clock=SystemClock(),
            )
        finally:
            for api in apis.values():
                await api.aclose()
