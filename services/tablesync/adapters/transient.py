"""The failures a service waits out and retries, rather than stopping for.

A side throttling or away beyond the connector's retries, or refusing our
credentials or a read until an operator fixes them, the broker away, and
PostgreSQL restarting or unreachable: each clears by itself, and every step
that meets one is safe to repeat (effects are committed with their positions,
writes are idempotent), so the step is tried again after a pause."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError

from tablesync.errors import ApiAuthError, ApiUnavailable, ClaimsBusy, ReadRefused

__all__ = ["TRANSIENT"]

TRANSIENT: tuple[type[BaseException], ...] = (
    ApiUnavailable,
    # Credentials or a permission refused, or a read the side will not serve:
    # fixed by an operator, not by the service, which waits (logged and
    # counted, ``metrics.read_refused``) rather than stopping every service
    # of its process. Where a refused query concerns some records only,
    # apply narrows it down to them first (``runtime.refused``).
    ApiAuthError,
    ReadRefused,
    # Another apply instance holds the batch's records (it may be frozen
    # until its session times out): waited out, nothing taken meanwhile.
    ClaimsBusy,
    OSError,
    KafkaError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # "the database system is shutting down / starting up", "terminating
    # connection due to administrator command": a restart, not an error.
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
    # A connection the server terminated mid-statement can go back to the pool
    # with its protocol state half-way ("cannot switch to state 15; another
    # operation (2) is in progress", MagicStack/asyncpg#784); the pool closes
    # it when the failed step releases it, and the retry gets a fresh one.
    asyncpg.InternalClientError,
)
