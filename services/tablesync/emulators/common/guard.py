"""The one middleware: counters, bearer auth, injected faults, the service-protection limit.

A plain ASGI middleware (no per-request task or body buffering) so it costs next to
nothing on the hot path. Control routes under ``/_emulator`` need the same token but
are neither counted, faulted nor throttled.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablesync.emulators.common.messages import ApiResponse
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.runtime import Runtime

__all__ = ["CONTROL_PREFIX", "Guard", "send_response"]

CONTROL_PREFIX = "/_emulator"
_WWW_AUTHENTICATE = (
    'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'
)


async def send_response(send: Send, response: ApiResponse) -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class Guard:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self._expected = f"Bearer {runtime.config.token}".encode()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        runtime = self.runtime
        style = runtime.service.style
        control = scope["path"].startswith(CONTROL_PREFIX)
        stats = runtime.stats
        if not control:
            stats.total += 1
            stats.by_method[scope["method"]] += 1
        if not self._authorized(scope):
            stats.unauthorized += not control
            problem = ApiProblem(
                Kind.UNAUTHORIZED,
                "The request has no valid bearer token in its Authorization header.",
                headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
            )
            await self._refuse(send, style.response(problem), control)
            return
        if control:
            await self.app(scope, receive, send)
            return
        fault = runtime.faults.take()
        if fault is not None:
            stats.faults += 1
            headers = {"Retry-After": str(fault.retry_after)} if fault.status in (429, 503) else {}
            kind = Kind.THROTTLED if fault.status == 429 else Kind.UNAVAILABLE
            problem = ApiProblem(
                kind,
                f"Injected fault: the emulator answers {fault.status}.",
                status=fault.status,
                headers=headers,
            )
            await self._refuse(send, style.response(problem), control)
            return
        wait = runtime.limiter.admit()
        if wait is not None:
            limiter = runtime.limiter
            problem = ApiProblem(
                Kind.THROTTLED,
                f"Number of requests exceeded the limit of {limiter.budget} over time window of "
                f"{limiter.window_s:g} seconds.",
                headers={"Retry-After": str(wait)},
            )
            await self._refuse(send, style.response(problem), control)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                stats.by_status[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)

    async def _refuse(self, send: Send, response: ApiResponse, control: bool) -> None:
        if not control:
            self.runtime.stats.by_status[response.status] += 1
            if response.status == 429:
                self.runtime.stats.throttled += 1
        await send_response(send, response)
