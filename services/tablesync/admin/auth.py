"""Bearer-token authentication of the admin server.

Every request needs ``Authorization: Bearer <admin token>`` except the public
paths: the health probe and the dashboard's shell (its HTML, script and
styles), which hold no data and no secret — the page asks for the token and
sends it with each API call it makes."""

from __future__ import annotations

import hmac
import ipaddress

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "BearerAuth", "insecure_bind", "is_public"]

log = structlog.get_logger()

PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/static/",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, or "": it may be reached from elsewhere


def insecure_bind(host: str, token: str, default_token: str) -> str | None:
    """Why serving on ``host`` with ``token`` is refused; None when it is not.

    An empty token is refused anywhere; the default one, published with the
    source, only on an address other machines may reach."""
    if not token.strip():
        return "TABLESYNC_ADMIN_TOKEN is empty: set it to a secret of your own"
    if token == default_token and not is_loopback(host):
        return (
            f"the admin server would listen on {host or 'every address'} (TABLESYNC_ADMIN_HOST), "
            "which other machines may reach, with the default TABLESYNC_ADMIN_TOKEN: set "
            "TABLESYNC_ADMIN_TOKEN to a secret of your own, or TABLESYNC_ADMIN_HOST to 127.0.0.1"
        )
    return None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class BearerAuth:
    """Refuses a request without the right bearer token with 401, before routing."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]):
            await self._app(scope, receive, send)
            return
        problem = self._problem(Headers(scope=scope).get("authorization"))
        if problem is None:
            await self._app(scope, receive, send)
            return
        log.warning("admin_unauthorized", method=scope["method"], path=scope["path"], why=problem)
        body = orjson.dumps({"error": problem})
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="tablesync"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _problem(self, header: str | None) -> str | None:
        if not header:
            return "missing bearer token: send Authorization: Bearer <admin token>"
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "the Authorization header is not a bearer token"
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            return "the bearer token is not the admin token"
        return None
