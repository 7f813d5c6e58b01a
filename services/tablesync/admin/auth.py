"""Bearer-token authentication of the admin server.

Every request needs ``Authorization: Bearer <admin token>`` except the public
paths: the health probe and the dashboard's shell (its HTML, script and
styles), which hold no data and no secret — the page asks for the token and
sends it with each API call it makes."""

from __future__ import annotations

import hmac

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["PUBLIC_PATHS", "PUBLIC_PREFIXES", "BearerAuth", "is_public"]

log = structlog.get_logger()

PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/static/",)


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
