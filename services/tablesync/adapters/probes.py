"""Whether a dependency answers, for readiness (``runtime.health``): each
probe returns when it did and raises with the reason when it did not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from tablesync.adapters.kafka.connection import KafkaConnection

__all__ = ["Probe", "kafka_probe", "postgres_probe"]

Probe = Callable[[], Awaitable[None]]


def kafka_probe(connection: KafkaConnection, *, timeout_s: float) -> Probe:
    """A metadata request answered with at least one broker, on a client of its
    own: the services' clients keep retrying in the background and say nothing."""

    async def probe() -> None:
        admin = AIOKafkaAdminClient(
            **connection.client_kwargs(),
            client_id="tablesync-health",
            request_timeout_ms=int(timeout_s * 1000),
        )
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        if not cluster.get("brokers"):
            raise ConnectionError("the cluster reports no broker")

    return probe


def postgres_probe(pool: Any) -> Probe:
    """A query answered on a connection of the service's own pool."""

    async def probe() -> None:
        await pool.fetchval("SELECT 1")

    return probe
