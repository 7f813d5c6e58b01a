"""The two emulated systems as their users see them: records created, changed
and deleted over the real HTTP APIs, plus the emulators' control API.

A user whose request fails tries again, as people and scripts do: after a
429 or 503 the request was not applied and is simply sent again; after any
other failure a create may or may not have happened, so the record is looked
up by its marker before it is created again, and a delete that ends in 404
after such a failure is counted as ambiguous."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from tablesync.core import filters
from tablesync.core.events import Side

__all__ = ["DeleteOutcome", "SideApi", "Vanished", "id_field"]

DeleteOutcome = Literal["deleted", "gone", "ambiguous"]
_NOT_APPLIED = frozenset({429, 503})
_BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)
_ID_FIELDS = {
    ("bc", "customers"): "id",
    ("bc", "contacts"): "id",
    ("dataverse", "accounts"): "accountid",
    ("dataverse", "contacts"): "contactid",
}


def id_field(side: Side, entity_set: str) -> str:
    return _ID_FIELDS[(side, entity_set)]


class Vanished(Exception):
    """The record the request names does not exist (404)."""


class _Transient(Exception):
    def __init__(self, reason: str, *, applied_maybe: bool, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.applied_maybe = applied_maybe
        self.wait_s = wait_s


@dataclass
class SideApi:
    side: Side
    base_url: str
    token: str
    company: str = ""
    rng: random.Random = field(default_factory=random.Random)
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
            limits=httpx.Limits(max_connections=32),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    # addressing

    async def discover(self) -> None:
        """Learns BC's company id (the emulator makes one company)."""
        if self.side == "bc":
            rows = await self.with_retries(lambda: self._get_json("/BC/api/v2.0/companies"))
            self.company = rows["value"][0]["id"]

    def path(self, entity_set: str, record_id: str | None = None) -> str:
        base = (
            f"/BC/api/v2.0/companies({self.company})/{entity_set}"
            if self.side == "bc"
            else f"/api/data/v9.2/{entity_set}"
        )
        return f"{base}({record_id})" if record_id else base

    # plain reads (the verifier's)

    async def rows(self, entity_set: str, odata_filter: str | None = None) -> list[dict[str, Any]]:
        return [row async for row in self._pages(entity_set, odata_filter)]

    async def _pages(
        self, entity_set: str, odata_filter: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        params = {"$filter": odata_filter} if odata_filter else None
        url: str | None = self.path(entity_set)
        while url:
            data = await self._get_with_retries(url, params)
            for row in data["value"]:
                yield row
            url = data.get("@odata.nextLink")
            params = None

    async def _get_with_retries(self, url: str, params: dict[str, str] | None) -> Any:
        return await self.with_retries(lambda: self._get_json(url, params))

    async def find(self, entity_set: str, prop: str, value: str) -> list[dict[str, Any]]:
        expr = filters.Compare(prop, filters.Op.EQ, value)
        return await self.rows(entity_set, filters.to_odata(expr))

    async def _get_json(self, url: str, params: dict[str, str] | None = None) -> Any:
        response = await self._send("GET", url, params=params)
        self._raise_for(response, applied_maybe=False)
        return response.json()

    # writes (the users')

    async def create(
        self, entity_set: str, values: dict[str, Any], marker: tuple[str, str]
    ) -> dict[str, Any]:
        """Creates a record; after an unclear failure, finds it by ``marker``
        (property, value) before trying again, so a user never makes two."""
        headers = {"Prefer": "return=representation"}
        attempt = 0
        while True:
            try:
                response = await self._send(
                    "POST", self.path(entity_set), json=values, headers=headers
                )
                if response.status_code == 201:
                    data: dict[str, Any] = response.json()
                    return data
                self._raise_for(response, applied_maybe=True)
                raise AssertionError(
                    f"{self.side} refused a create of {entity_set}: "
                    f"{response.status_code} {response.text[:300]}"
                )
            except _Transient as exc:
                await asyncio.sleep(self._delay(attempt, exc.wait_s))
                attempt += 1
                if exc.applied_maybe:
                    found = await self.find(entity_set, *marker)
                    if found:
                        return found[0]

    async def update(self, entity_set: str, record_id: str, values: dict[str, Any]) -> None:
        """PATCH with ``If-Match: *`` (an update, never an upsert); ``Vanished`` on 404."""
        headers = {"If-Match": "*"}

        async def once() -> None:
            response = await self._send(
                "PATCH", self.path(entity_set, record_id), json=values, headers=headers
            )
            if response.status_code == 404:
                raise Vanished(f"{self.side} {entity_set}({record_id})")
            self._raise_for(response, applied_maybe=True)

        await self.with_retries(once)

    async def delete(self, entity_set: str, record_id: str) -> DeleteOutcome:
        headers = {"If-Match": "*"} if self.side == "bc" else {}
        unclear = False
        attempt = 0
        while True:
            try:
                response = await self._send(
                    "DELETE", self.path(entity_set, record_id), headers=headers
                )
                if response.status_code == 404:
                    return "ambiguous" if unclear else "gone"
                self._raise_for(response, applied_maybe=True)
                return "deleted"
            except _Transient as exc:
                unclear = unclear or exc.applied_maybe
                await asyncio.sleep(self._delay(attempt, exc.wait_s))
                attempt += 1

    # the emulator's control API

    async def inject(self, fault: dict[str, Any]) -> None:
        response = await self.client.post("/_emulator/faults", json=fault)
        response.raise_for_status()

    async def clear_faults(self) -> None:
        response = await self.client.delete("/_emulator/faults")
        response.raise_for_status()
        await self.end_short_listing()

    async def short_listing(self, share: float, seconds: float) -> None:
        """For ``seconds``, listings of ids alone leave out about ``share`` of the rows."""
        response = await self.client.post(
            "/_emulator/short-listing", json={"share": share, "for_seconds": seconds}
        )
        response.raise_for_status()

    async def hidden_from_listings(self) -> int:
        """How many rows the current short listing has left out so far."""
        response = await self.client.get("/_emulator/short-listing")
        response.raise_for_status()
        state = response.json()
        return int(state["hidden"]) if state else 0

    async def end_short_listing(self) -> None:
        response = await self.client.delete("/_emulator/short-listing")
        response.raise_for_status()

    async def expire_delta_links(self) -> None:
        """Dataverse: every delta link issued so far is answered as expired."""
        response = await self.client.post("/_emulator/change-tracking/expire")
        response.raise_for_status()

    async def answers(self) -> bool:
        try:
            response = await self.client.get("/_emulator/stats")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def stats(self) -> dict[str, Any]:
        response = await self.client.get("/_emulator/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    # plumbing

    async def _send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return await self.client.request(method, url, json=json, headers=headers, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Transient(f"{type(exc).__name__}", applied_maybe=False) from exc
        except httpx.TransportError as exc:
            raise _Transient(f"{type(exc).__name__}", applied_maybe=True) from exc

    @staticmethod
    def _raise_for(response: httpx.Response, *, applied_maybe: bool) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise _Transient(
                f"HTTP {status}",
                applied_maybe=applied_maybe and status not in _NOT_APPLIED,
                wait_s=wait,
            )
        if status >= 400:
            raise AssertionError(f"HTTP {status} {response.request.url}: {response.text[:300]}")

    def _delay(self, attempt: int, wait_s: float | None) -> float:
        if wait_s is not None:
            return wait_s
        return _BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)] * (0.5 + self.rng.random())

    async def with_retries(self, call: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return await call()
            except _Transient as exc:
                await asyncio.sleep(self._delay(attempt, exc.wait_s))
                attempt += 1
