"""Every admin route refuses a missing or wrong bearer token with 401.

The routes are read from the app itself, so a route added later is tested
without anyone listing it here; the public ones are an explicit, short list."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from starlette.routing import Mount, Route

from tablesync.adapters.kafka import KafkaConnection, KafkaPublisher
from tablesync.adapters.postgres import postgres_stores
from tablesync.admin import AdminService
from tablesync.composition import SideApis, build_operator, topics_for
from tests.admin.conftest import ADMIN_TOKEN, Admin

pytestmark = pytest.mark.integration

# Paths that answer without a token: the health probe and the dashboard's
# shell (HTML, script, styles), which carry no data. Adding one is a decision.
PUBLIC = {"/healthz", "/", "/static"}
_SAMPLE = {
    "name": "CUSTOMER",
    "mapping": "CUSTOMER",
    "side": "bc",
    "job_id": str(uuid.uuid4()),
    "run_id": str(uuid.uuid4()),
    "record_id": str(uuid.uuid4()),
}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: _SAMPLE.get(m.group(1), "x"), path)


async def _requests(admin: Admin) -> list[tuple[str, str, str]]:
    """(method, url path, route template) for every route of the admin app."""
    settings = admin.stack.settings
    async with KafkaPublisher(KafkaConnection.from_settings(settings)) as publisher:
        operator = build_operator(
            settings,
            postgres_stores(admin.stack.pool),
            apis=SideApis(settings),
            publisher=publisher,
        )
        service = AdminService(
            settings, pool=admin.stack.pool, operator=operator, topics=topics_for(settings)
        )
    found: list[tuple[str, str, str]] = []
    for route in service.app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                found.append((method, _concrete(route.path), route.path))
        elif isinstance(route, Mount):
            found.append(("GET", f"{route.path}/dashboard.js", route.path))
        else:
            raise AssertionError(f"a route of an unknown kind: {route!r}")
    return found


async def test_every_route_refuses_a_missing_or_wrong_token(admin: Admin) -> None:
    requests = await _requests(admin)
    assert len({template for _, _, template in requests}) >= 15
    assert {template for _, _, template in requests} >= PUBLIC
    async with httpx.AsyncClient(base_url=admin.url, timeout=30) as anonymous:
        for method, path, template in requests:
            if template in PUBLIC:
                r = await anonymous.request(method, path)
                assert r.status_code == 200, f"{method} {path}: {r.status_code}"
                continue
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {ADMIN_TOKEN}"},
                {"Authorization": "Bearer"},
            ):
                r = await anonymous.request(method, path, headers=headers, json={})
                assert r.status_code == 401, f"{method} {path} {headers}: {r.status_code}"
                assert r.headers["www-authenticate"].startswith("Bearer")
                if method != "HEAD":
                    assert "error" in r.json()
            # With the token the route answers something other than 401.
            r = await admin.client.request(method, path, json={})
            assert r.status_code != 401, f"{method} {path} with the token: {r.status_code}"
            assert r.status_code < 500, f"{method} {path}: {r.status_code} {r.text}"


async def test_unknown_paths_need_the_token_too(admin: Admin) -> None:
    async with httpx.AsyncClient(base_url=admin.url, timeout=30) as anonymous:
        assert (await anonymous.get("/api/nothing-here")).status_code == 401
    r = await admin.client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "no such path: /api/nothing-here"}
    r = await admin.client.put("/api/jobs")
    assert r.status_code == 405
    assert "PUT" in r.json()["error"]
