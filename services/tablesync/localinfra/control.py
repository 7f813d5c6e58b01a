"""Both servers at once: the operations behind ``python -m tablesync.localinfra``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from tablesync.errors import InfraError
from tablesync.localinfra import kafka, postgres
from tablesync.localinfra.locks import file_lock_async
from tablesync.localinfra.model import InfraStatus, ServerStatus
from tablesync.localinfra.paths import state_dir
from tablesync.settings import Settings

__all__ = [
    "down",
    "down_async",
    "purge",
    "purge_async",
    "shutdown",
    "shutdown_async",
    "status",
    "status_async",
    "up",
    "up_async",
]

_LOCK_FILE = "infra.lock"

T = TypeVar("T")


def up(settings: Settings, *, kafka_controller_port: int | None = None) -> InfraStatus:
    """Start (or find) Kafka and PostgreSQL and wait until both answer.

    Idempotent: servers already running are only checked. A server of the right
    kind that tablesync does not manage is reported as external and used as is.
    Raises InfraError when either cannot be made usable.
    """
    return asyncio.run(up_async(settings, kafka_controller_port=kafka_controller_port))


def down(settings: Settings) -> None:
    """Stop the servers tablesync manages; external servers are never touched."""
    asyncio.run(down_async(settings))


def shutdown(settings: Settings) -> InfraStatus:
    """``down``, reporting what each server is afterwards."""
    return asyncio.run(shutdown_async(settings))


def status(settings: Settings) -> InfraStatus:
    return asyncio.run(status_async(settings))


def purge(settings: Settings) -> None:
    """Stop the managed servers and delete their data, configuration and logs."""
    asyncio.run(purge_async(settings))


async def up_async(settings: Settings, *, kafka_controller_port: int | None = None) -> InfraStatus:
    async with file_lock_async(_lock_path(settings)):
        return await _both(
            kafka.up(settings, controller_port=kafka_controller_port), postgres.up(settings)
        )


async def down_async(settings: Settings) -> None:
    await shutdown_async(settings)


async def shutdown_async(settings: Settings) -> InfraStatus:
    """``down``, reporting what each server is afterwards."""
    async with file_lock_async(_lock_path(settings)):
        return await _both(kafka.down(settings), postgres.down(settings))


async def status_async(settings: Settings) -> InfraStatus:
    return await _both(kafka.status(settings), postgres.status(settings))


async def purge_async(settings: Settings) -> None:
    async with file_lock_async(_lock_path(settings)):
        await _both_done(kafka.purge(settings), postgres.purge(settings))


def _lock_path(settings: Settings) -> Path:
    return state_dir(settings) / _LOCK_FILE


async def _both(
    kafka_call: Awaitable[ServerStatus], postgres_call: Awaitable[ServerStatus]
) -> InfraStatus:
    # Both run to the end even when one fails, so one error does not hide the other.
    kafka_result, postgres_result = await asyncio.gather(
        kafka_call, postgres_call, return_exceptions=True
    )
    _raise_failures((kafka_result, postgres_result))
    return InfraStatus(kafka=_unwrap(kafka_result), postgres=_unwrap(postgres_result))


async def _both_done(kafka_call: Awaitable[None], postgres_call: Awaitable[None]) -> None:
    results = await asyncio.gather(kafka_call, postgres_call, return_exceptions=True)
    _raise_failures(results)


def _raise_failures(results: Sequence[object]) -> None:
    """Raise the failures among ``results``: bugs as they are, InfraErrors as one."""
    failures = [result for result in results if isinstance(result, BaseException)]
    for failure in failures:
        if not isinstance(failure, InfraError):
            raise failure
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise InfraError("\n".join(str(failure) for failure in failures))


def _unwrap(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result
