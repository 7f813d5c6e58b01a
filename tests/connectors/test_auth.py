"""OAuth 2.0 client credentials against a token endpoint on a real socket."""

from __future__ import annotations

import asyncio
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

from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.adapters.odata.http import ODataHttp
from tablesync.errors import ApiAuthError
from tests.connectors.fakes import FakeTime, api_settings
from tests.connectors.servers import serve

SECRET = "s3cret-value-never-logged"
ACCOUNT = {
    "accountid": "00000000-0000-0000-0000-00000000000a",
    "modifiedon": "2025-01-01T00:00:00Z",
    "name": "A",
}


@dataclass
class IdentityPlatform:
    """A token endpoint (client credentials) and an API that only takes its live tokens."""

    expires_in: int = 3600
    refuse_client: bool = False
    issue_dead_tokens: bool = False
    issued: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    live: set[str] = field(default_factory=set)
    api_calls: int = 0

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.forms.append(form)
        if self.refuse_client or form.get("client_secret") != SECRET:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret.",
                },
                status_code=401,
            )
        value = f"token-{len(self.issued) + 1}"
        self.issued.append(value)
        if not self.issue_dead_tokens:
            self.live.add(value)
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": value}
        )

    async def accounts(self, request: Request) -> Response:
        self.api_calls += 1
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.live:
            return JSONResponse(
                {"error": {"code": "0x80072243", "message": "expired"}}, status_code=401
            )
        return JSONResponse({"value": [ACCOUNT]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/tenant/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/api/data/v9.2/accounts", self.accounts, methods=["GET"]),
            ]
        )


@pytest.fixture
async def platform() -> AsyncIterator[tuple[IdentityPlatform, str]]:
    identity = IdentityPlatform()
    async with serve(identity.app()) as url:
        yield identity, url


def _api(url: str, time: FakeTime | None = None, **overrides: object) -> DataverseApi:
    settings = api_settings(
        f"{url}/api/data/v9.2",
        token_url=f"{url}/tenant/oauth2/v2.0/token",
        client_id="app-1",
        client_secret=SecretStr(SECRET),
        scope="https://org.crm.dynamics.com/.default",
        static_token=None,
        **overrides,
    )
    if time is None:
        return DataverseApi(settings)
    return DataverseApi(
        settings, http=ODataHttp("dataverse", settings, clock=time.clock, sleep=time.sleep)
    )


async def _read(api: DataverseApi) -> int:
    return sum([len(page) async for page in api.read_all("accounts")])


async def test_token_is_fetched_once_and_cached(platform: tuple[IdentityPlatform, str]) -> None:
    identity, url = platform
    api = _api(url)

    for _ in range(5):
        assert await _read(api) == 1

    assert identity.issued == ["token-1"]
    assert identity.forms[0] == {
        "grant_type": "client_credentials",
        "client_id": "app-1",
        "client_secret": SECRET,
        "scope": "https://org.crm.dynamics.com/.default",
    }
    assert api.stats.token_fetches == 1
    await api.aclose()


async def test_concurrent_first_calls_share_one_token_request(
    platform: tuple[IdentityPlatform, str],
) -> None:
    identity, url = platform
    api = _api(url)

    await asyncio.gather(*(_read(api) for _ in range(10)))

    assert identity.issued == ["token-1"]
    await api.aclose()


async def test_token_is_renewed_before_it_expires(platform: tuple[IdentityPlatform, str]) -> None:
    identity, url = platform
    identity.expires_in = 600
    time = FakeTime()
    api = _api(url, time)

    await _read(api)
    time.now += 550  # inside the last tenth of the lifetime, not yet expired
    await _read(api)
    await _read(api)

    assert identity.issued == ["token-1", "token-2"]
    await api.aclose()


async def test_a_401_renews_the_token_once(platform: tuple[IdentityPlatform, str]) -> None:
    identity, url = platform
    api = _api(url)
    await _read(api)
    identity.live.clear()  # the API revokes every token it issued

    assert await _read(api) == 1

    assert identity.issued == ["token-1", "token-2"]
    await api.aclose()


async def test_a_401_with_a_fresh_token_is_an_auth_error(
    platform: tuple[IdentityPlatform, str],
) -> None:
    identity, url = platform
    identity.issue_dead_tokens = True
    api = _api(url)

    with pytest.raises(ApiAuthError, match=r"GET /api/data/v9\.2/accounts: 401 expired"):
        await _read(api)

    assert identity.issued == ["token-1", "token-2"]
    assert identity.api_calls == 2
    await api.aclose()


async def test_refused_client_credentials_raise_auth_error_without_the_secret(
    platform: tuple[IdentityPlatform, str],
) -> None:
    identity, url = platform
    identity.refuse_client = True
    api = _api(url)

    with capture_logs() as logs, pytest.raises(ApiAuthError) as caught:
        await _read(api)

    assert "invalid_client" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert all(SECRET not in repr(entry) for entry in logs)
    assert identity.api_calls == 0
    await api.aclose()


async def test_static_token_is_used_when_no_token_url(
    platform: tuple[IdentityPlatform, str],
) -> None:
    identity, url = platform
    identity.live.add("local-dev-token")
    api = DataverseApi(api_settings(f"{url}/api/data/v9.2"))

    assert await _read(api) == 1
    assert identity.forms == []
    await api.aclose()
