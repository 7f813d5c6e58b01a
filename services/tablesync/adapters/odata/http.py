"""One side's HTTP client: pooled keep-alive connections, bearer auth, retries.

``send`` returns every answer the caller has to interpret (2xx and per-record 4xx)
and handles the rest itself:

- 401 → the token is dropped and the request sent once more with a new one; a second
  401, a 401 with a static token, or a 403 → ``ApiAuthError``.
- 429 → wait ``Retry-After`` (seconds or HTTP date; backoff when absent), then retry.
  Every request of that user waits out the pause, because the service protection
  limits of both APIs lengthen the penalty of a user that keeps sending.
- 5xx, 408, timeouts, connection errors, a cut or garbled body → exponential backoff
  with full jitter, then retry.
- After ``max_retries`` retries → ``ApiUnavailable`` naming side, method, URL path and
  the last status or error.

A request that may have taken effect is not sent twice unless it is idempotent: a POST
that creates a record is retried only when the server cannot have applied it (429,
503, or the connection never opened). Otherwise a retry could create a duplicate, and
the caller is better placed to check before trying again.

Both services count their protection limits per user, so a side may sign in as
several application users (``extra_clients``): each has its own token source, its own
``max_connections`` slots and its own throttling state. A request (a ``$batch`` or a
bulk message is one) goes to the user with the most free slots that is not held back
by a 429, in turn when several have as many; a 429 holds back only the user it
answered, and the retry goes to whichever user is free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from tablesync.adapters.odata.stats import ApiStats, UserStats
from tablesync.errors import ApiAuthError, ApiError, ApiUnavailable, ConfigError
from tablesync.settings import ApiSettings, ExtraClient

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
    user: int = 0
    """Which of the side's users sent it (for ``hold_back``); -1 the token endpoint."""


@dataclass(slots=True)
class _User:
    """One application user of the side: its token, its slots, its throttling."""

    tokens: TokenSource | None
    """None: the token endpoint's own lane, whose requests carry no bearer."""
    slots: asyncio.Semaphore
    stats: UserStats
    load: int = 0
    """Requests that chose this user and have not finished: in flight or about to be."""
    resume_at: float = 0.0


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


def _label(source: TokenSource, client_id: str | None, n: int) -> str:
    """What stats and logs call a user: its client id, else its place (never a token)."""
    return client_id if client_id and isinstance(source, ClientCredentials) else f"token{n}"


class ODataHttp:
    """The HTTP client of one side; every request of a connector goes through ``send``."""

    def __init__(
        self,
        side: str,
        settings: ApiSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        tokens: TokenSource | Sequence[TokenSource] | None = None,
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
        self.per_user = max(1, settings.max_connections)
        # Requests beyond the pool wait here rather than in httpx, whose pool timeout
        # would turn a long queue into spurious PoolTimeout errors.
        if tokens is None:
            sources = [self._token_source(settings)] + [
                self._extra_source(settings, extra, n)
                for n, extra in enumerate(settings.extra_clients)
            ]
        elif isinstance(tokens, Sequence):
            sources = list(tokens)
        else:
            sources = [tokens]
        labels = [settings.client_id] + [extra.client_id for extra in settings.extra_clients]
        self._users = [
            _User(
                source,
                asyncio.Semaphore(self.per_user),
                UserStats(_label(source, labels[n] if n < len(labels) else None, n)),
            )
            for n, source in enumerate(sources)
        ]
        self._turn = 0
        # Token requests go to Entra, not to the API: they neither take an API user's
        # slot nor its turn, and Entra's own 429 holds back only them.
        self._token_endpoint = _User(None, asyncio.Semaphore(len(self._users)), UserStats("entra"))
        self.concurrency = self.per_user * len(self._users)
        """Requests this side may have in flight at once, over all its users."""
        # Room for one token request per user besides a full complement of API requests.
        pool = self.concurrency + len(self._users)
        limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
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

    def _extra_source(self, settings: ApiSettings, extra: ExtraClient, n: int) -> TokenSource:
        """The token source of ``extra_clients[n]``: a secret with OAuth, else a static token."""
        env = f"TABLESYNC_{self.side.upper()}__EXTRA_CLIENTS[{n}]."
        if settings.token_url is None:
            if extra.static_token is None:
                raise ConfigError(f"{self.side}: {env}static_token is needed without OAuth")
            return StaticToken(extra.static_token)
        if not extra.client_id or extra.client_secret is None or not settings.scope:
            raise ConfigError(
                f"{self.side}: {settings.token_url} needs {env}client_id and {env}client_secret"
            )
        return ClientCredentials(
            self._post_form,
            side=self.side,
            token_url=settings.token_url,
            client_id=extra.client_id,
            credential=ClientSecret(extra.client_secret),
            scope=settings.scope,
            clock=self._clock,
            names={"client_id": f"{env}client_id", "client_secret": f"{env}client_secret"},
        )

    @property
    def users(self) -> list[UserStats]:
        """Each user's share of the traffic, in the order of the settings."""
        return [user.stats for user in self._users]

    async def _pick(self) -> int:
        """The user the next request goes to: not held back, most free slots, in turn
        among equals; when every user is held back, the first to resume. Its load
        counts the request from here on, until the caller takes it off."""
        users = self._users
        while True:
            now = self._clock()
            count = len(users)
            best: int | None = None
            for step in range(count):
                n = (self._turn + step) % count
                user = users[n]
                if user.resume_at > now:
                    continue
                if best is None or user.load < users[best].load:
                    best = n
            if best is not None:
                self._turn = (best + 1) % count
                users[best].load += 1
                return best
            await self._sleep(min(user.resume_at for user in users) - now)

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
            if authorize:
                n = await self._pick()
                user = self._users[n]
            else:
                n, user = -1, self._token_endpoint
                while (remaining := user.resume_at - self._clock()) > 0:
                    await self._sleep(remaining)
            try:
                outcome = await self._attempt(
                    user, method, target, headers, content, authorize, decode
                )
            finally:
                if authorize:
                    user.load -= 1
            token, response, data, failure = outcome
            status: int | None = None
            retry_after: float | None = None
            if isinstance(failure, ValueError):
                last = f"unreadable body ({type(failure).__name__})"
                if not safe_to_repeat:
                    raise self._gave_up(method, target, retries, last, None, True) from failure
            elif isinstance(failure, _TRANSIENT):
                last = type(failure).__name__
                if not safe_to_repeat and not isinstance(failure, _NOT_SENT):
                    raise self._gave_up(method, target, retries, last, None, True) from failure
            elif failure is not None:
                raise ApiError(
                    f"{method} {target.path}: {type(failure).__name__}", side=self.side
                ) from failure
            else:
                assert response is not None
                status = response.status_code
                if status < 400:
                    return Reply(status, response.headers, response.content, data, n)
                tokens = user.tokens
                if (
                    status == 401
                    and token is not None
                    and tokens is not None
                    and tokens.refreshable
                    and not renewed
                ):
                    tokens.invalidate(token)
                    renewed = True
                    continue
                if status in (401, 403) and refusals:
                    return Reply(
                        status, response.headers, response.content, _error_body(response), n
                    )
                if status in (401, 403):
                    body = _error_body(response)
                    raise ApiAuthError(
                        f"{method} {target.path}: {status} {error_message(body, response.content)}",
                        side=self.side,
                        status=status,
                    )
                if status not in (408, 429) and status < 500:
                    return Reply(
                        status, response.headers, response.content, _error_body(response), n
                    )
                last = f"status {status}"
                retry_after = retry_after_s(response.headers.get("retry-after"))
                if status == 429:
                    self.stats.throttled += 1
                    user.stats.throttled += 1
                elif not safe_to_repeat and status not in _NOT_APPLIED:
                    raise self._gave_up(method, target, retries, last, status, True)
            if retries >= self._policy.max_retries:
                raise self._gave_up(method, target, retries, last, status, False)
            delay = retry_after if retry_after is not None else self._policy.backoff_s(retries)
            if status == 429:
                self.hold_back(delay, n)
            retries += 1
            self.stats.retries += 1
            user.stats.retries += 1
            structlog.get_logger().info(
                "odata.retry",
                side=self.side,
                user=user.stats.user,
                method=method,
                path=target.path,
                reason=last,
                attempt=retries,
                delay_s=round(delay, 3),
            )
            if status == 429 and len(self._users) > 1:
                # Only that user is held back: the next pick waits for it only when
                # every other user is held back too.
                continue
            await self._sleep(delay)

    async def _attempt(
        self,
        user: _User,
        method: str,
        target: httpx.URL,
        headers: Mapping[str, str] | None,
        content: bytes | None,
        authorize: bool,
        decode: Decode,
    ) -> tuple[str | None, httpx.Response | None, Json, BaseException | None]:
        """One request on ``user``: (token sent, response, decoded body, failure)."""
        token = await user.tokens.token() if user.tokens is not None and authorize else None
        request_headers = dict(headers or {})
        if token is not None:
            request_headers["Authorization"] = f"Bearer {token}"
        try:
            async with user.slots:
                self.stats.requests += 1
                stats = user.stats
                stats.requests += 1
                stats.in_flight += 1
                stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
                try:
                    response = await self._client.request(
                        method, target, headers=request_headers, content=content
                    )
                    data = decode(response) if response.status_code < 400 else None
                finally:
                    stats.in_flight -= 1
        except (ValueError, httpx.HTTPError) as exc:
            return token, None, None, exc
        return token, response, data, None

    async def pause(self, seconds: float) -> None:
        """Waits as this client waits between retries (tests give a fake sleep)."""
        await self._sleep(seconds)

    def hold_back(self, delay: float, user: int | None = None) -> None:
        """Makes every request of ``user`` (of every user when None; -1 is the token
        endpoint's) wait ``delay`` seconds from now."""
        until = self._clock() + delay
        lanes = [self._token_endpoint] if user == -1 else self._users
        for n, held in enumerate(lanes):
            if user is None or user in (-1, n):
                held.resume_at = max(held.resume_at, until)

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
