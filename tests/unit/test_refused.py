"""Narrowing a refused read down to the records the side refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tablesync.errors import ReadRefused, ReadUnauthorized
from tablesync.runtime.refused import narrowed


def _refusing(
    poison: set[int], status: int = 400
) -> tuple[list[list[int]], Callable[[Sequence[int]], Awaitable[list[int]]]]:
    asked: list[list[int]] = []

    async def read(keys: Sequence[int]) -> list[int]:
        asked.append(list(keys))
        if poison & set(keys):
            kind = ReadUnauthorized if status in (401, 403) else ReadRefused
            raise kind(
                f"GET accounts: {status} cannot read",
                side="dataverse",
                status=status,
                entity_set="accounts",
            )
        return list(keys)

    return asked, read


@given(st.integers(1, 80).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_a_refused_read_is_narrowed_down_to_the_keys_refused_alone(
    case: tuple[int, set[int]],
) -> None:
    n, poison = case
    keys = list(range(n))
    asked, read = _refusing(poison)

    found, refused = asyncio.run(narrowed(keys, read))

    assert sorted(k for part in found for k in part) == sorted(set(keys) - poison)
    assert set(refused) == poison
    assert all(r.status == 400 and r.entity_set == "accounts" for r in refused.values())
    # One poisoned key costs about two requests per halving, never one per key.
    if len(poison) == 1:
        assert len(asked) <= 1 + 2 * max(1, n.bit_length())


def test_credentials_refused_are_raised_at_once() -> None:
    asked, read = _refusing({3}, status=403)

    with capture_logs() as logs, pytest.raises(ReadRefused) as raised:
        asyncio.run(narrowed(list(range(10)), read, mapping="CUSTOMER"))

    assert raised.value.credentials
    assert asked == [list(range(10))]
    [logged] = logs
    assert logged["event"] == "read_refused"
    assert (logged["side"], logged["entity_set"], logged["status"]) == (
        "dataverse",
        "accounts",
        403,
    )
    assert logged["mapping"] == "CUSTOMER" and logged["credentials"] is True


def test_each_record_refused_is_logged_with_the_sides_reason() -> None:
    _, read = _refusing({5})

    with capture_logs() as logs:
        asyncio.run(narrowed(list(range(8)), read, read="match"))

    refused = [e for e in logs if e["event"] == "read_refused"]
    narrowing = [e for e in logs if e["event"] == "read_narrowed"]
    assert len(refused) == 1 and refused[0]["records"] == 1
    assert refused[0]["reason"] == "GET accounts: 400 cannot read"
    assert [e["records"] for e in narrowing] == [8, 4, 2]
