"""Connection pools to the state database."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

__all__ = ["create_pool"]


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 5) -> Any:
    """A pool whose connections read and write jsonb as Python values."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=_init)
