"""docker-compose.yml, checked without a container engine: it is valid under
the Compose Specification's JSON Schema, and its parts agree with each other
and with tablesync — every TABLESYNC_ variable is a real setting, every
command a real ``tablesync`` command, the database URL carries the server's
user and password, the broker and the emulators are addressed as their
services advertise and listen, every long-running service has a healthcheck
that asks the port it serves, ports are published on 127.0.0.1 only and
volumes are named.

``compose-spec.json`` is ``schema/compose-spec.json`` of
https://github.com/compose-spec/compose-spec at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6
(the file last changed in a08f8d5, 2025-10-28), copied unchanged."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import typer.core
import typer.main
import yaml
from pydantic import BaseModel

from tablesync.cli.main import app
from tablesync.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
TABLESYNC = {n: s for n, s in SERVICES.items() if str(s.get("image", "")).startswith("tablesync:")}
ONE_SHOT = {n for n, s in TABLESYNC.items() if s.get("restart") == "no"}
LONG_RUNNING = set(SERVICES) - ONE_SHOT

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: object) -> str:
    """Compose's ``${VAR:-default}``, with no variable set: the defaults."""
    return _VARIABLE.sub(lambda m: m["default"] or "", str(value))


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(v) for k, v in (service.get("environment") or {}).items()}


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("TABLESYNC_"):
            monkeypatch.delenv(key)
    for key, value in environment(SERVICES[name]).items():
        monkeypatch.setenv(key, value)
    return Settings()


def setting_exists(variable: str) -> bool:
    """Whether ``TABLESYNC_A__B`` names a field of the settings (they ignore unknown ones)."""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix("TABLESYNC_").lower().split("__")
    for i, part in enumerate(parts):
        found = model.model_fields.get(part)
        if found is None:
            return False
        annotation = found.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_valid_under_the_compose_specification() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_check_can_fail() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["apply"]["restart"] = ["always"]
    broken["services"]["admin"]["healtcheck"] = {"test": ["CMD", "true"]}
    assert len(list(jsonschema.Draft7Validator(SCHEMA).iter_errors(broken))) == 2


def test_every_service_of_tablesync_is_there() -> None:
    commands = {" ".join(s["command"]) for s in TABLESYNC.values()}
    for wanted in (
        "run capture --side bc",
        "run capture --side dataverse",
        "run apply",
        "run coordinator",
        "run admin",
        "emulator bc",
        "emulator dataverse",
        "mappings load --yes",
    ):
        assert wanted in commands
    assert {"kafka", "postgres"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(TABLESYNC))
def test_environment_names_real_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment(SERVICES[name])
    unknown = sorted(k for k in env if not k.startswith("TABLESYNC_") or not setting_exists(k))
    assert not unknown, f"{name}: not tablesync settings: {unknown}"
    settings_of(name, monkeypatch)


def test_setting_check_can_fail() -> None:
    assert setting_exists("TABLESYNC_HEALTH__PORT")
    assert not setting_exists("TABLESYNC_HEALTH__PROT")
    assert not setting_exists("TABLESYNC_ADMIN_PORT__X")


def _parse(args: list[str]) -> None:
    """Resolves and parses a ``tablesync`` command line without running it."""
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="tablesync")
    while isinstance(command, typer.core.TyperGroup):
        assert args, "a sub-command is missing"
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"no command {args[0]!r}"
        command, args = sub, args[1:]
    command.make_context(command.name or "", list(args), parent=ctx)


@pytest.mark.parametrize("name", sorted(TABLESYNC))
def test_commands_are_tablesync_commands(name: str) -> None:
    service = SERVICES[name]
    _parse(list(service["command"]))
    test = service["healthcheck"].get("test")
    if test is not None:
        assert test[:2] == ["CMD", "tablesync"]
        _parse(test[2:])


def test_command_check_can_fail() -> None:
    # typer's own click: its UsageError is not importable under a public name.
    with pytest.raises(Exception, match="No such option: --sid"):
        _parse(["run", "capture", "--sid", "bc"])
    with pytest.raises(AssertionError):
        _parse(["rn", "apply"])


def test_database_url_is_the_servers_user_password_and_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pg = environment(SERVICES["postgres"])
    for name in TABLESYNC:
        url = urlsplit(settings_of(name, monkeypatch).database_dsn())
        assert (url.hostname, url.port) == ("postgres", 5432), name
        assert url.username == pg["POSTGRES_USER"], name
        assert url.password == pg["POSTGRES_PASSWORD"], name
        assert url.path == "/" + pg["POSTGRES_DB"], name


def _listeners(text: str) -> dict[str, tuple[str, int]]:
    found = {}
    for item in text.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        found[name] = (host, int(port))
    return found


def test_kafka_is_advertised_where_containers_reach_it(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = environment(SERVICES["kafka"])
    advertised = _listeners(kafka["KAFKA_ADVERTISED_LISTENERS"])
    listening = _listeners(kafka["KAFKA_LISTENERS"])
    for name in TABLESYNC:
        bootstrap = settings_of(name, monkeypatch).kafka_bootstrap_servers
        host, _, port = bootstrap.rpartition(":")
        listener = next(n for n, a in advertised.items() if a == (host, int(port)))
        assert host == "kafka", f"{name}: {bootstrap} is not the kafka service"
        assert listening[listener][1] == int(port)
    # Programs on the host use the published port, advertised as 127.0.0.1.
    external = next(a for a in advertised.values() if a[0] == "127.0.0.1")
    assert f"127.0.0.1:{external[1]}:{listening['EXTERNAL'][1]}" in SERVICES["kafka"]["ports"]


def test_the_apis_are_the_emulators_as_they_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    emulators = {
        "bc": settings_of("emulator-bc", monkeypatch),
        "dataverse": settings_of("emulator-dataverse", monkeypatch),
    }
    for emulator in emulators.values():
        assert emulator.emulator.host == "0.0.0.0", "other containers must reach it"
    for name in TABLESYNC:
        s = settings_of(name, monkeypatch)
        for side, api, path in (
            ("bc", s.bc, "/BC/api/v2.0"),
            ("dataverse", s.dataverse, "/api/data/v9.2"),
        ):
            emulator = emulators[side].emulator
            port = emulator.bc_port if side == "bc" else emulator.dataverse_port
            url = urlsplit(api.base_url)
            assert (url.hostname, url.port, url.path) == (f"emulator-{side}", port, path), name
            assert api.static_token is not None
            assert api.static_token.get_secret_value() == emulator.token.get_secret_value()
            published = SERVICES[f"emulator-{side}"]["ports"]
            assert f"127.0.0.1:{port}:{port}" in published


def test_every_long_running_service_has_a_healthcheck_on_what_it_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in LONG_RUNNING:
        check = SERVICES[name].get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name
        if name in TABLESYNC and "--emulator" not in check["test"]:
            assert settings_of(name, monkeypatch).health.port is not None, name
    for name in ONE_SHOT:
        assert SERVICES[name]["healthcheck"] == {"disable": True}, name


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_the_admin_listens_where_it_is_published(monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings_of("admin", monkeypatch)
    assert s.admin_host == "0.0.0.0"
    assert f"127.0.0.1:{s.admin_port}:{s.admin_port}" in SERVICES["admin"]["ports"]


def test_volumes_are_named_and_declared() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            assert not source.startswith((".", "/")), f"{name}: {volume} is not a named volume"
            used.add(source)
    assert used == declared
    assert {"kafka", "postgres"} <= {n for n, s in SERVICES.items() if s.get("volumes")}, (
        "the broker's and the database's data outlive their containers"
    )


def test_depends_on_names_services_and_waits_for_mappings() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_completed_successfully":
                assert dependency in ONE_SHOT
            if condition["condition"] == "service_healthy":
                assert dependency in LONG_RUNNING
    for name, service in TABLESYNC.items():
        if service["command"][0] == "run":
            assert "mappings" in service["depends_on"], name
