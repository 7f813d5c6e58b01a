"""Fixtures for tests on the real Kafka and PostgreSQL: a fresh state database
and fresh topic names for every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher, ensure_topics
from tablesync.adapters.kafka.topics import delete_topics
from tablesync.adapters.postgres import migrate, postgres_stores
from tablesync.application import Operator
from tablesync.composition import SideApis, build_operator, topics_for
from tablesync.settings import with_database
from tests.conftest import InfraEndpoints
from tests.integration.stack import Stack, open_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def state_template(infra: InfraEndpoints) -> AsyncIterator[str]:
    """A migrated database that each test's database is copied from."""
    name = f"tablesync_tpl_{uuid.uuid4().hex[:10]}"
    admin = with_database(infra.database_dsn, "postgres")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    await migrate(with_database(infra.database_dsn, name))
    yield name
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def state_dsn(infra: InfraEndpoints, state_template: str) -> AsyncIterator[str]:
    """A fresh, migrated state database for one test."""
    name = f"tablesync_t_{uuid.uuid4().hex[:12]}"
    admin = with_database(infra.database_dsn, "postgres")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{state_template}"')
    finally:
        await conn.close()
    yield with_database(infra.database_dsn, name)
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def topic_prefix(infra: InfraEndpoints) -> AsyncIterator[str]:
    """Topics no other test uses, deleted after the test: a broker that keeps
    every test's partitions runs out of heap after a few thousand runs."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield prefix
    await delete_topics(KafkaConnection(infra.kafka_bootstrap_servers), prefix)


@pytest.fixture
async def idle_stack(
    infra: InfraEndpoints, state_dsn: str, topic_prefix: str
) -> AsyncIterator[Stack]:
    """A stack whose services are not started (a test starts them if it needs
    them); the commands topic a request is published on exists."""
    async with open_stack(
        kafka=infra.kafka_bootstrap_servers, state_dsn=state_dsn, topic_prefix=topic_prefix
    ) as s:
        await ensure_topics(
            KafkaConnection.from_settings(s.settings), topics_for(s.settings).control_specs()
        )
        yield s
        await s.stop()


@pytest.fixture
async def operator(idle_stack: Stack) -> AsyncIterator[Operator]:
    """The application layer on the stack's state database, broker and emulators."""
    apis = SideApis(idle_stack.settings)
    async with KafkaPublisher(KafkaConnection.from_settings(idle_stack.settings)) as publisher:
        try:
            yield build_operator(
                idle_stack.settings,
                postgres_stores(idle_stack.pool),
                apis=apis,
                publisher=publisher,
            )
        finally:
            await apis.aclose()
