"""A late commit, made in an emulator's own database: one transaction stamps a
user's change of a record well in the past and commits only once capture has
read past later changes of the table — a long posting, a plug-in, a ``$batch``
change set that stamps its rows long before it commits. The change is a user's
like any other and must reach the other side."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from tablesync.core.events import Side
from tests.faults.scope import CONTACTS, Table
from tests.faults.sides import id_field

__all__ = ["late_write"]

_STAMP = {"bc": ("lastModifiedDateTime", "milliseconds"), "dataverse": ("modifiedon", "second")}
_VERSION = {"bc": "_version", "dataverse": "versionnumber"}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _update(table: Table, side: Side, values: dict[str, str]) -> tuple[str, list[object]]:
    """The UPDATE the side's own write would make, its stamp ``$2`` seconds back."""
    entity_set = table.entity_set(side)
    stamp, precision = _STAMP[side]
    args: list[object] = []
    sets: list[str] = []
    for f in table.editable:
        for column in (f.on(side), *(f.dv_also if side == "dataverse" else ())):
            args.append(values[f.name])
            sets.append(f"{_quoted(column)} = ${len(args) + 2}")
    if side == "bc" and table is CONTACTS:
        # What BC keeps beside a contact's name.
        args.append(values["name"].upper())
        sets.append(f'"searchName" = ${len(args) + 2}')
    sets.append(f"{_quoted(_VERSION[side])} = nextval('ts_version')")
    sets.append(
        f"{_quoted(stamp)} = date_trunc('{precision}', "
        "clock_timestamp() - make_interval(secs => $2))"
    )
    sql = (
        f"UPDATE {_quoted(entity_set)} SET {', '.join(sets)} "
        f"WHERE {_quoted(id_field(side, entity_set))} = $1::uuid "
        f"RETURNING {_quoted(stamp)}"
    )
    return sql, args


@contextlib.asynccontextmanager
async def late_write(
    dsn: str, table: Table, side: Side, record_id: str, values: dict[str, str], behind_s: float
) -> AsyncIterator[datetime | None]:
    """Writes ``values`` on entry, stamped ``behind_s`` seconds ago, and commits on
    exit; yields the stamp (None: no such record). An error inside rolls it back."""
    sql, args = _update(table, side, values)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            stamp: datetime | None = await conn.fetchval(sql, record_id, behind_s, *args)
            yield stamp
    finally:
        with contextlib.suppress(
            OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError
        ):
            # The server may be the one restarting: the connection is gone then.
            await conn.close(timeout=5)
