"""Bearer tokens for one side: a static token, or OAuth 2.0 client credentials.

Client credentials follow the Microsoft identity platform's flow: a form POST of
``grant_type=client_credentials``, ``client_id``, ``client_secret`` and ``scope`` to the
token endpoint, answered by ``access_token``, ``token_type`` and ``expires_in`` (seconds).
The token is cached and renewed ahead of expiry; a 401 from the API invalidates it once
(``invalidate``) so the next call fetches a new one. Token values and secrets never
appear in messages or logs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import SecretStr

from tablesync.errors import ApiAuthError, ApiUnavailable

__all__ = ["ClientCredentials", "StaticToken", "TokenPost", "TokenSource"]

TokenPost = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]
"""Sends a form to a URL without authorization; returns (status, parsed JSON body)."""

# Renew this long before expiry, at most: long enough that a request in flight never
# carries a token that lapses on the way, short enough for minutes-long test tokens.
_MAX_EARLY_S = 300.0
_EARLY_FRACTION = 0.1


class TokenSource(Protocol):
    """Where a connector gets its bearer token from."""

    @property
    def refreshable(self) -> bool:
        """Whether a rejected token can be replaced by fetching a new one."""
        ...

    async def token(self) -> str: ...

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is the cached one (the API refused it)."""
        ...


class StaticToken:
    """A fixed bearer token (the emulators' ``local-dev-token``, or one from elsewhere)."""

    refreshable = False

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token.get_secret_value()

    def invalidate(self, token: str) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    refresh_at: float
    expires_at: float


class ClientCredentials:
    """OAuth 2.0 client-credentials tokens, cached until shortly before they expire."""

    refreshable = True

    def __init__(
        self,
        post: TokenPost,
        *,
        side: str,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post = post
        self._side = side
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._clock = clock
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        # One fetch at a time: concurrent callers wait for it instead of each asking.
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            try:
                self._cached = await self._fetch()
            except ApiUnavailable:
                # The endpoint is down but the old token still works: keep using it.
                if cached is not None and self._clock() < cached.expires_at:
                    return cached.value
                raise
            return self._cached.value

    def invalidate(self, token: str) -> None:
        if self._cached is not None and self._cached.value == token:
            self._cached = None

    async def _fetch(self) -> _Cached:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret.get_secret_value(),
            "scope": self._scope,
        }
        started = self._clock()
        status, body = await self._post(self._token_url, form)
        if status >= 400:
            raise ApiAuthError(
                f"token endpoint refused client {self._client_id!r}: {status} {_oauth_error(body)}",
                side=self._side,
                status=status,
            )
        value = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise ApiAuthError("token endpoint answered without an access_token", side=self._side)
        lifetime = _expires_in(body)
        early = min(_MAX_EARLY_S, lifetime * _EARLY_FRACTION)
        structlog.get_logger().info(
            "odata.token_fetched", side=self._side, client_id=self._client_id, expires_in=lifetime
        )
        return _Cached(value, started + lifetime - early, started + lifetime)


def _expires_in(body: dict[str, Any]) -> float:
    raw = body.get("expires_in")
    try:
        # Entra ID sends a number; some older endpoints send it as a string.
        lifetime = float(raw) if raw is not None else 3600.0
    except (TypeError, ValueError):
        lifetime = 3600.0
    return max(0.0, lifetime)


def _oauth_error(body: Any) -> str:
    """RFC 6749 section 5.2 error code and description, first line only."""
    if not isinstance(body, dict):
        return "(no error body)"
    code = str(body.get("error") or "error")
    description = str(body.get("error_description") or "").strip().splitlines()
    return f"{code}: {description[0]}" if description else code
