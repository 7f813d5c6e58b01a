"""One side's HTTP client: pooled keep-alive connections, bearer auth, retries.

``send`` returns every answer the caller has to interpret (2xx and per-record 4xx)
and handles the rest itself:

- 401 → the token is dropped and the request sent once more with a new one; a second
  401, a 401 with a static token, or a 403 → ``ApiAuthError``.
- 429 → wait ``Retry-After`` (seconds or HTTP date; backoff when absent), then retry.
  Every request of this client waits out that pause, because the service protection
  limits of both APIs lengthen the penalty of a client that keeps sending.
- 5xx, 408, timeouts, connection errors, a cut or garbled body → exponential backoff
  with full jitter, then retry.
- After ``max_retries`` retries → ``ApiUnavailable`` naming side, method, URL path and
  the last status or error.

A request that may have taken effect is not sent twice unless it is idempotent: a POST
that creates a record is retried only when the server cannot have applied it (429,
503, or the connection never opened). Otherwise a retry could create a duplicate, and
the caller is better placed to check before trying again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlencode

import httpx
import orjson
import structlog

from tablesync.adapters.odata.auth import (
    ClientCertificate,
    ClientCredential,
    ClientCredentials,
    ClientSecret,
    StaticToken,
    TokenSource,
)
from tablesync.adapters.odata.retry import RetryPolicy, retry_after_s
from tablesync.adapters.odata.stats import ApiStats
from tablesync.errors import ApiAuthError, ApiError, ApiUnavailable, ConfigError
from tablesync.settings import ApiSettings

__all__ = ["Decode", "ODataHttp", "Reply", "error_message"]

Json: TypeAlias = Any

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Statuses with which the server says it did not process the request.
_NOT_APPLIED = frozenset({429, 503})
# Transport failures that happen before a byte of the request left.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
_MESSAGE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer for the caller to interpret."""

    status: int
    headers: httpx.Headers
    content: bytes
    data: Json
    """The parsed body: JSON by default, or whatever the ``decode`` given to ``send`` made."""


Decode: TypeAlias = Callable[[httpx.Response], Json]
"""Parses a 2xx/3xx body; a ValueError means the body was cut or garbled and is
handled like a broken connection."""


def decode_json(response: httpx.Response) -> Json:
    """The JSON body of a success, None when there is none; ValueError when unreadable."""
    if not response.content:
        return None
    return orjson.loads(response.content)


def _error_body(response: httpx.Response) -> Json:
    try:
        return orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        return None


def error_message(data: Json, content: bytes = b"") -> str:
    """The API's own message from an OData error body, or the start of the raw body."""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            if isinstance(message, str) and message:
                return message[:_MESSAGE_LIMIT]
            code = error.get("code")
            if code:
                return str(code)[:_MESSAGE_LIMIT]
        if isinstance(error, str):
            return error[:_MESSAGE_LIMIT]
    text = content.decode("utf-8", "replace").strip()
    return text[:_MESSAGE_LIMIT] if text else "(no message)"


class ODataHttp:
    """The HTTP client of one side; every request of a connector goes through ``send``."""

    def __init__(
        self,
        side: str,
        settings: ApiSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        tokens: TokenSource | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.side = side
        self.stats = ApiStats(side)
        settings = settings.resolved("bc" if side == "bc" else "dataverse")
        self.base_url = httpx.URL(settings.url().rstrip("/"))
        self._policy = policy or RetryPolicy.from_settings(settings)
        self._sleep = sleep
        self._clock = clock
        self.concurrency = max(1, settings.max_connections)
        # Requests beyond the pool wait here rather than in httpx, whose pool timeout
        # would turn a long queue into spurious PoolTimeout errors.
        self._slots = asyncio.Semaphore(self.concurrency)
        self._resume_at = 0.0
        self._tokens = tokens or self._token_source(settings)
        limits = httpx.Limits(
            max_connections=self.concurrency,
            max_keepalive_connections=self.concurrency,
        )
        self._client = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=limits,
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            headers={
                "Accept": "application/json",
                "OData-MaxVersion": "4.0",
                "OData-Version": "4.0",
            },
            follow_redirects=False,
        )

    def _token_source(self, settings: ApiSettings) -> TokenSource:
        env = f"TABLESYNC_{self.side.upper()}__"
        if settings.token_url is None:
            if settings.static_token is None:
                raise ConfigError(
                    f"{self.side}: set {env}TENANT_ID (or {env}TOKEN_URL) and {env}CLIENT_ID "
                    f"for OAuth, or {env}STATIC_TOKEN"
                )
            return StaticToken(settings.static_token)
        missing = [
            f"{env}{name.upper()}" for name in ("client_id", "scope") if not getattr(settings, name)
        ]
        if settings.client_secret is None and settings.client_certificate_file is None:
            missing.append(f"{env}CLIENT_SECRET or {env}CLIENT_CERTIFICATE_FILE")
        if missing:
            raise ConfigError(f"{self.side}: {settings.token_url} needs {', '.join(missing)}")
        assert settings.client_id is not None
        assert settings.scope is not None
        names = {
            name: f"{env}{name.upper()}"
            for name in (
                "client_id",
                "client_secret",
                "client_certificate_file",
                "client_certificate_key_file",
                "client_certificate_password",
                "tenant_id",
                "scope",
            )
        }
        credential: ClientCredential
        if settings.client_certificate_file is not None:
            # A certificate wins over a secret: it is the credential Microsoft recommends.
            credential = ClientCertificate.from_files(
                settings.client_certificate_file,
                key_file=settings.client_certificate_key_file,
                password=settings.client_certificate_password,
                names=names,
            )
        else:
            assert settings.client_secret is not None
            credential = ClientSecret(settings.client_secret)
        return ClientCredentials(
            self._post_form,
            side=self.side,
            token_url=settings.token_url,
            client_id=settings.client_id,
            credential=credential,
            scope=settings.scope,
            clock=self._clock,
            names=names,
        )

    async def _post_form(self, url: str, form: dict[str, str]) -> tuple[int, Json]:
        self.stats.token_fetches += 1
        reply = await self.send(
            "POST",
            url,
            content=urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            authorize=False,
            idempotent=True,
            refusals=True,
        )
        return reply.status, reply.data

    def url(self, path: str) -> httpx.URL:
        """An absolute URL: ``path`` as is when absolute, from the host root when it starts
        with '/', else under the base URL."""
        if path.startswith(("http://", "https://")):
            return httpx.URL(path)
        if path.startswith("/"):
            return self.base_url.copy_with(raw_path=path.encode("ascii"))
        return httpx.URL(f"{self.base_url}/{path}")

    async def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        idempotent: bool | None = None,
        authorize: bool = True,
        decode: Decode = decode_json,
        refusals: bool = False,
    ) -> Reply:
        """Sends until the answer is one the caller must interpret (2xx, 3xx, or a 4xx
        other than 401/403/408/429); raises ApiAuthError or ApiUnavailable otherwise.
        ``refusals``: 401 and 403 are answers too (a token endpoint's, whose body says
        why)."""
        target = self.url(path)
        safe_to_repeat = method in _IDEMPOTENT if idempotent is None else idempotent
        retries = 0
        renewed = False
        while True:
            await self._wait_out_throttling()
            token = await self._tokens.token() if authorize else None
            request_headers = dict(headers or {})
            if token is not None:
                request_headers["Authorization"] = f"Bearer {token}"
            status: int | None = None
            retry_after: float | None = None
            try:
                async with self._slots:
                    self.stats.requests += 1
                    response = await self._client.request(
                        method, target, headers=request_headers, content=content
                    )
                    data = decode(response) if response.status_code < 400 else None
            except ValueError as exc:
                last = f"unreadable body ({type(exc).__name__})"
                if not safe_to_repeat:
                    raise self._gave_up(method, target, retries, last, None, True) from exc
            except _TRANSIENT as exc:
                last = type(exc).__name__
                if not safe_to_repeat and not isinstance(exc, _NOT_SENT):
                    raise self._gave_up(method, target, retries, last, None, True) from exc
            except httpx.HTTPError as exc:
                raise ApiError(
                    f"{method} {target.path}: {type(exc).__name__}", side=self.side
                ) from exc
            else:
                status = response.status_code
                if status < 400:
                    return Reply(status, response.headers, response.content, data)
                if status == 401 and token is not None and self._tokens.refreshable and not renewed:
                    self._tokens.invalidate(token)
                    renewed = True
                    continue
                if status in (401, 403) and refusals:
                    return Reply(status, response.headers, response.content, _error_body(response))
                if status in (401, 403):
                    body = _error_body(response)
                    raise ApiAuthError(
                        f"{method} {target.path}: {status} {error_message(body, response.content)}",
                        side=self.side,
                        status=status,
                    )
                if status not in (408, 429) and status < 500:
                    return Reply(status, response.headers, response.content, _error_body(response))
                last = f"status {status}"
                retry_after = retry_after_s(response.headers.get("retry-after"))
                if status == 429:
                    self.stats.throttled += 1
                elif not safe_to_repeat and status not in _NOT_APPLIED:
                    raise self._gave_up(method, target, retries, last, status, True)
            if retries >= self._policy.max_retries:
                raise self._gave_up(method, target, retries, last, status, False)
            delay = retry_after if retry_after is not None else self._policy.backoff_s(retries)
            if status == 429:
                self.hold_back(delay)
            retries += 1
            self.stats.retries += 1
            structlog.get_logger().info(
                "odata.retry",
                side=self.side,
                method=method,
                path=target.path,
                reason=last,
                attempt=retries,
                delay_s=round(delay, 3),
            )
            await self._sleep(delay)

    async def pause(self, seconds: float) -> None:
        """Waits as this client waits between retries (tests give a fake sleep)."""
        await self._sleep(seconds)

    def hold_back(self, delay: float) -> None:
        """Makes every request of this client wait ``delay`` seconds from now."""
        self._resume_at = max(self._resume_at, self._clock() + delay)

    async def _wait_out_throttling(self) -> None:
        while (remaining := self._resume_at - self._clock()) > 0:
            await self._sleep(remaining)

    def _gave_up(
        self,
        method: str,
        target: httpx.URL,
        retries: int,
        last: str,
        status: int | None,
        unsafe: bool,
    ) -> ApiUnavailable:
        self.stats.unavailable += 1
        if unsafe:
            message = (
                f"{method} {target.path}: {last}; not retried because the server may have "
                "applied it"
            )
        else:
            message = f"{method} {target.path}: gave up after {retries + 1} attempts; last {last}"
        structlog.get_logger().warning(
            "odata.unavailable",
            side=self.side,
            method=method,
            path=target.path,
            attempts=retries + 1,
            reason=last,
        )
        return ApiUnavailable(message, side=self.side, status=status)

    async def aclose(self) -> None:
        await self._client.aclose()
