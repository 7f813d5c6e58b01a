"""Several application users on one side: requests spread over them, a 429 holds back
only the user it answered, and no user's secret reaches a log."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from tablesync.adapters.odata.http import ODataHttp
from tablesync.errors import ApiAuthError
from tablesync.settings import ExtraClient
from tests.connectors.fakes import FakeTime, api_settings
from tests.connectors.servers import serve

TOKENS = ["token-of-user-0", "token-of-user-1", "token-of-user-2"]
SECRETS = {"app-0": "s3cret-0-never-logged", "app-1": "s3cret-1-never-logged"}
WAIT_S = 10.0


@dataclass
class Api:
    """An API that counts requests per bearer token; ``throttled`` tokens get a 429,
    and while ``hold`` is set requests wait for ``released``."""

    throttled: set[str] = field(default_factory=set)
    seen: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)
    hold: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    refused_clients: set[str] = field(default_factory=set)

    async def accounts(self, request: Request) -> Response:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.seen[bearer] += 1
        if bearer in self.throttled:
            return JSONResponse(
                {"error": {"code": "0x80072322", "message": "Number of requests exceeded"}},
                status_code=429,
                headers={"Retry-After": "60"},
            )
        if self.hold:
            async with self.changed:
                self.in_flight[bearer] += 1
                self.changed.notify_all()
            await self.released.wait()
        return JSONResponse({"value": []})

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        client = form.get("client_id", "")
        if client in self.refused_clients or SECRETS.get(client) != form.get("client_secret"):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid."},
                status_code=401,
            )
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": 3600, "access_token": f"token-of-{client}"}
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/data/v9.2/accounts", self.accounts, methods=["GET"]),
                Route("/tenant/oauth2/v2.0/token", self.token, methods=["POST"]),
            ]
        )


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, str]]:
    fake = Api()
    async with serve(fake.app()) as url:
        yield fake, url


def _static_users(url: str, time: FakeTime | None = None, **overrides: object) -> ODataHttp:
    settings = api_settings(
        f"{url}/api/data/v9.2",
        static_token=SecretStr(TOKENS[0]),
        extra_clients=[ExtraClient(static_token=SecretStr(t)) for t in TOKENS[1:]],
        **overrides,
    )
    if time is None:
        return ODataHttp("dataverse", settings)
    return ODataHttp("dataverse", settings, sleep=time.sleep, clock=time.clock)


async def test_requests_take_turns_over_the_users(api: tuple[Api, str]) -> None:
    fake, url = api
    http = _static_users(url)
    for _ in range(9):
        await http.send("GET", "accounts")

    assert fake.seen == Counter(dict.fromkeys(TOKENS, 3))
    assert [u.user for u in http.users] == ["token0", "token1", "token2"]
    assert [u.requests for u in http.users] == [3, 3, 3]
    assert http.stats.requests == 9
    await http.aclose()


async def test_requests_in_flight_go_to_the_user_with_the_most_free_slots(
    api: tuple[Api, str],
) -> None:
    fake, url = api
    fake.hold = True
    http = _static_users(url, max_connections=4)
    assert http.concurrency == 12
    sends = [asyncio.create_task(http.send("GET", "accounts")) for _ in range(20)]

    async with fake.changed:
        await asyncio.wait_for(
            fake.changed.wait_for(lambda: sum(fake.in_flight.values()) == 12), WAIT_S
        )
    # Every user's slots are full and none beyond: the other 8 wait in the connector.
    assert fake.in_flight == Counter(dict.fromkeys(TOKENS, 4))
    assert [u.in_flight for u in http.users] == [4, 4, 4]
    fake.released.set()
    await asyncio.wait_for(asyncio.gather(*sends), WAIT_S)

    assert sum(fake.seen.values()) == 20
    assert all(u.peak_in_flight == 4 for u in http.users)
    assert all(u.in_flight == 0 for u in http.users)
    await http.aclose()


async def test_a_429_holds_back_only_the_user_it_answered(api: tuple[Api, str]) -> None:
    fake, url = api
    fake.throttled.add(TOKENS[1])
    time = FakeTime()
    http = _static_users(url, time)

    for _ in range(8):
        assert (await http.send("GET", "accounts")).status == 200

    # User 1 was asked once and is held back for its Retry-After; its request went to
    # another user at once, without waiting, and the others carried on.
    assert fake.seen[TOKENS[1]] == 1
    assert fake.seen[TOKENS[0]] + fake.seen[TOKENS[2]] == 8
    assert time.sleeps == []
    assert [u.throttled for u in http.users] == [0, 1, 0]
    assert http.stats.throttled == 1
    await http.aclose()


async def test_when_every_user_is_held_back_the_first_to_resume_goes_on(
    api: tuple[Api, str],
) -> None:
    fake, url = api
    fake.throttled.update(TOKENS)
    time = FakeTime()
    http = ODataHttp(
        "dataverse",
        api_settings(
            f"{url}/api/data/v9.2",
            static_token=SecretStr(TOKENS[0]),
            extra_clients=[ExtraClient(static_token=SecretStr(t)) for t in TOKENS[1:]],
            max_retries=3,
        ),
        sleep=time.sleep,
        clock=time.clock,
    )

    with pytest.raises(Exception, match="gave up after 4 attempts"):
        await http.send("GET", "accounts")

    # Three users asked once each, then a wait for the first to resume.
    assert sorted(fake.seen.values()) == [1, 1, 2]
    assert time.sleeps == [60.0]
    await http.aclose()


def _oauth_users(url: str, secrets: dict[str, str]) -> ODataHttp:
    (first, first_secret), *rest = secrets.items()
    settings = api_settings(
        f"{url}/api/data/v9.2",
        token_url=f"{url}/tenant/oauth2/v2.0/token",
        client_id=first,
        client_secret=SecretStr(first_secret),
        scope="https://org.crm.dynamics.com/.default",
        static_token=None,
        extra_clients=[ExtraClient(client_id=c, client_secret=SecretStr(s)) for c, s in rest],
    )
    return ODataHttp("dataverse", settings)


async def test_each_client_signs_in_with_its_own_secret_and_none_is_logged(
    api: tuple[Api, str],
) -> None:
    fake, url = api
    http = _oauth_users(url, SECRETS)

    with capture_logs() as logs:
        for _ in range(4):
            await http.send("GET", "accounts")

    assert fake.seen == Counter({"token-of-app-0": 2, "token-of-app-1": 2})
    assert [u.user for u in http.users] == ["app-0", "app-1"]
    assert {e["client_id"] for e in logs if e["event"] == "odata.token_fetched"} == {
        "app-0",
        "app-1",
    }
    assert all(s not in repr(entry) for entry in logs for s in SECRETS.values())
    assert all("token-of-" not in repr(entry) for entry in logs)
    await http.aclose()


async def test_a_refused_extra_client_names_its_setting_without_the_secret(
    api: tuple[Api, str],
) -> None:
    fake, url = api
    fake.refused_clients.add("app-1")
    http = _oauth_users(url, SECRETS)

    with capture_logs() as logs:
        await http.send("GET", "accounts")
        with pytest.raises(ApiAuthError) as caught:
            await http.send("GET", "accounts")

    assert "app-1" in str(caught.value)
    assert "TABLESYNC_DATAVERSE__EXTRA_CLIENTS[0].client_secret" in str(caught.value)
    assert all(s not in str(caught.value) for s in SECRETS.values())
    assert all(s not in repr(entry) for entry in logs for s in SECRETS.values())
    assert "s3cret" not in repr(http.users) + repr(
        api_settings(
            extra_clients=[
                ExtraClient(client_id="app-1", client_secret=SecretStr(SECRETS["app-1"]))
            ]
        )
    )
    await http.aclose()
