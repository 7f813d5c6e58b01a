"""The admin server refuses to serve, beyond this machine, with the token
everyone knows (or with none at all): the message names the setting."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tablesync.adapters.memory import memory_stores
from tablesync.adapters.memory.log import MemoryBroker
from tablesync.admin import AdminService
from tablesync.admin.auth import insecure_bind
from tablesync.composition import SideApis, build_operator, topics_for
from tablesync.errors import ConfigError
from tablesync.settings import DEFAULT_TOKEN, Settings


def service(settings: Settings, *, required: bool) -> AdminService:
    operator = build_operator(
        settings,
        memory_stores(),
        apis=SideApis(settings),
        publisher=MemoryBroker().publisher(),
    )
    return AdminService(
        settings, pool=None, operator=operator, topics=topics_for(settings), required=required
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.0.2.10", "admin.example.com"])
async def test_run_admin_on_a_reachable_address_with_the_default_token_refuses_to_start(
    host: str,
) -> None:
    admin = service(Settings(admin_host=host, admin_port=0), required=True)
    with pytest.raises(ConfigError, match="TABLESYNC_ADMIN_TOKEN") as refused:
        await admin.run(asyncio.Event())
    assert "TABLESYNC_ADMIN_HOST" in str(refused.value)
    assert not admin.started.is_set()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_an_empty_token_is_refused_on_any_address(host: str) -> None:
    settings = Settings(admin_host=host, admin_port=0, admin_token=SecretStr(" "))
    with pytest.raises(ConfigError, match="TABLESYNC_ADMIN_TOKEN is empty"):
        await service(settings, required=True).run(asyncio.Event())


async def test_under_run_all_the_refused_admin_server_is_logged_and_the_rest_goes_on() -> None:
    admin = service(Settings(admin_host="0.0.0.0", admin_port=0), required=False)
    with capture_logs() as logs:
        await admin.run(asyncio.Event())  # returns: the other services are not stopped
    [event] = [e for e in logs if e["event"] == "admin_not_started"]
    assert "TABLESYNC_ADMIN_TOKEN" in event["error"] and event["log_level"] == "error"
    assert DEFAULT_TOKEN not in str(logs)


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("127.0.0.1", DEFAULT_TOKEN, False),
        ("localhost", DEFAULT_TOKEN, False),
        ("::1", DEFAULT_TOKEN, False),
        ("127.0.0.2", DEFAULT_TOKEN, False),
        ("0.0.0.0", "a-secret-of-our-own", False),
        ("0.0.0.0", DEFAULT_TOKEN, True),
        ("10.1.2.3", DEFAULT_TOKEN, True),
        ("127.0.0.1", "", True),
    ],
)
def test_which_binds_are_refused(host: str, token: str, refused: bool) -> None:
    assert (insecure_bind(host, token, DEFAULT_TOKEN) is not None) is refused


async def test_a_loopback_address_with_the_default_token_still_serves() -> None:
    admin = service(Settings(admin_host="127.0.0.1", admin_port=0), required=True)
    stop = asyncio.Event()
    running = asyncio.ensure_future(admin.run(stop))
    await asyncio.wait_for(admin.started.wait(), timeout=30)
    stop.set()
    await asyncio.wait_for(running, timeout=30)
