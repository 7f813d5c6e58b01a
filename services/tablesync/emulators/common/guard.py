"""The one middleware: counters, bearer auth, injected faults, the service-protection limit.

A plain ASGI middleware (no per-request task or body buffering) so it costs next to
nothing on the hot path. Control routes under ``/_emulator`` need the same token but
are neither counted, faulted nor throttled.

Limits are kept per user, the bearer token a request carries: the emulators accept
``token`` and each of ``extra_tokens``, and each accepted token is a user of its own,
as each application user (client id) of a real tenant is. Under the real limits
(``limiter.py``) a request also takes a slot of its user's concurrency, waits there
for the latency plus the cost of the records it wrote before its answer goes out, and
its time in the slot counts against the user's execution-time budget.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablesync.emulators.common.limiter import RealLimits, UserLimits, metering
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
        config = runtime.config
        self._accepted = [
            f"Bearer {token}".encode() for token in (config.token, *config.extra_tokens)
        ]

    def _user(self, scope: Scope) -> bytes | None:
        """The request's bearer token when it is an accepted one: who the limits count."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                # Every token compared, so the time taken says nothing about which matched.
                matched = [hmac.compare_digest(value, accepted) for accepted in self._accepted]
                return value if any(matched) else None
        return None

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
        user = self._user(scope)
        if user is None:
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
        protection = runtime.protection
        limits = protection.user(user.decode("latin-1"))
        real = protection.real
        # A request refused for the time already spent does not count as one of the
        # window's requests; one refused for concurrency does (it was admitted first).
        spent = self._time_spent(limits)
        if spent is not None:
            await self._refuse(send, style.response(spent), control)
            return
        wait = limits.requests.admit()
        if wait is not None:
            problem = ApiProblem(
                Kind.THROTTLED,
                f"Number of requests exceeded the limit of {protection.budget} over time window "
                f"of {protection.window_s:g} seconds.",
                headers={"Retry-After": str(wait)},
            )
            await self._refuse(send, style.response(problem), control)
            return
        limits.admitted += 1
        if real is not None:
            await self._limited(scope, receive, send, real, limits)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                stats.by_status[message["status"]] += 1
            await send(message)

        await self.app(scope, receive, counting_send)

    @staticmethod
    def _time_spent(limits: UserLimits) -> ApiProblem | None:
        """Dataverse's refusal once the user's execution time of the window is spent."""
        execution = limits.execution
        if execution is None:
            return None
        wait = execution.admit()
        if wait is None:
            return None
        return ApiProblem(
            Kind.THROTTLED_TIME,
            "Combined execution time of incoming requests exceeded limit of "
            f"{round(execution.budget_s * 1000):,} milliseconds over time window of "
            f"{execution.window_s:g} seconds. Decrease number of concurrent requests or "
            "reduce the duration of requests and try again later.",
            headers={"Retry-After": str(wait)},
        )

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, real: RealLimits, limits: UserLimits
    ) -> None:
        runtime = self.runtime
        style = runtime.service.style
        stats = runtime.stats
        execution, gate = limits.execution, limits.gate
        assert gate is not None
        queued = gate.active >= gate.concurrent
        if not await gate.enter():
            problem = ApiProblem(
                Kind.THROTTLED_CONCURRENCY,
                f"Number of concurrent requests exceeded the limit of {gate.concurrent}"
                + (f" with {gate.queued} more queued." if gate.queued else "."),
                headers={"Retry-After": "1"},
            )
            await self._refuse(send, style.response(problem), False)
            return
        stats.queued += queued
        started = time.monotonic()
        hint = real.dop_hint if runtime.service.side == "dataverse" else None
        with metering() as cost:

            async def delayed_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    await asyncio.sleep(real.latency_s + cost.records * real.record_cost_s)
                    stats.by_status[message["status"]] += 1
                    if hint is not None:
                        headers = [*message.get("headers", []), (b"x-ms-dop-hint", b"%d" % hint)]
                        message = {**message, "headers": headers}
                await send(message)

            try:
                await self.app(scope, receive, delayed_send)
            finally:
                gate.leave()
                seconds = time.monotonic() - started
                if execution is not None:
                    execution.charge(seconds)
                stats.execution_s += seconds
                stats.records_written += cost.records

    async def _refuse(self, send: Send, response: ApiResponse, control: bool) -> None:
        if not control:
            self.runtime.stats.by_status[response.status] += 1
            if response.status == 429:
                self.runtime.stats.throttled += 1
        await send_response(send, response)
