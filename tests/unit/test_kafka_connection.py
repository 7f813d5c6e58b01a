"""The Kafka security settings, turned into aiokafka's arguments in one place,
and every client in the code built from them."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from aiokafka.abc import AbstractTokenProvider
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tablesync.adapters.kafka import KafkaConnection
from tablesync.errors import ConfigError
from tablesync.settings import KafkaSettings, Settings
from tests.connectors.servers import serve
from tests.pki import Pki, make_pki

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
PASSWORD = "sasl-password-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls(pki: Pki, **values: object) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "tablesync",
            "sasl_password": SecretStr(PASSWORD),
            "ssl_ca_file": pki.ca_file,
            "ssl_cert_file": pki.client_cert_file,
            "ssl_key_file": pki.client_key_file,
            "ssl_key_password": SecretStr(pki.client_key_password),
            **values,
        }
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaConnection("k1:9092,k2:9092").client_kwargs() == {
        "bootstrap_servers": "k1:9092,k2:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_gives_a_verifying_context_and_the_login(pki: Pki) -> None:
    kwargs = KafkaConnection("k:9093", _tls(pki)).client_kwargs()

    context = kwargs.pop("ssl_context")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert kwargs == {
        "bootstrap_servers": "k:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tablesync",
        "sasl_plain_password": PASSWORD,
    }


def test_one_context_serves_every_client_of_a_connection(pki: Pki) -> None:
    kafka = KafkaConnection("k:9093", _tls(pki))
    assert kafka.client_kwargs()["ssl_context"] is kafka.client_kwargs()["ssl_context"]


def test_hostname_verification_can_be_turned_off(pki: Pki) -> None:
    context = KafkaConnection("k:9093", _tls(pki, ssl_check_hostname=False)).client_kwargs()[
        "ssl_context"
    ]
    assert not context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_ssl_without_sasl_sends_no_login(pki: Pki) -> None:
    kwargs = KafkaConnection("k:9093", _tls(pki, security_protocol="SSL")).client_kwargs()
    assert kwargs["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kwargs


@pytest.mark.parametrize(
    ("values", "named"),
    [
        (
            {"security_protocol": "SASL_PLAINTEXT"},
            ["TABLESYNC_KAFKA__SASL_USERNAME", "TABLESYNC_KAFKA__SASL_PASSWORD"],
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u"},
            ["TABLESYNC_KAFKA__SASL_PASSWORD"],
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            [
                "TABLESYNC_KAFKA__SASL_OAUTH_TOKEN_URL",
                "TABLESYNC_KAFKA__SASL_OAUTH_CLIENT_ID",
                "TABLESYNC_KAFKA__SASL_OAUTH_CLIENT_SECRET",
                "TABLESYNC_KAFKA__SASL_OAUTH_SCOPE",
            ],
        ),
        (
            {"security_protocol": "SSL", "ssl_key_file": "/k.pem"},
            ["TABLESYNC_KAFKA__SSL_KEY_FILE", "TABLESYNC_KAFKA__SSL_CERT_FILE"],
        ),
    ],
)
def test_incomplete_settings_are_refused_naming_what_is_missing(
    values: dict[str, object], named: list[str]
) -> None:
    with pytest.raises(ConfigError) as refused:
        KafkaConnection("k:9093", KafkaSettings.model_validate(values))
    for name in named:
        assert name in str(refused.value)


def test_a_missing_ca_file_is_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TABLESYNC_KAFKA__SSL_CA_FILE"):
        KafkaConnection("k:9093", _tls(pki, ssl_ca_file=tmp_path / "nowhere.pem"))


def test_a_wrong_key_password_is_refused_naming_the_setting(pki: Pki) -> None:
    with pytest.raises(ConfigError) as refused:
        KafkaConnection("k:9093", _tls(pki, ssl_key_password=SecretStr("not-it")))
    assert "TABLESYNC_KAFKA__SSL_KEY_PASSWORD" in str(refused.value)
    assert "not-it" not in str(refused.value)


def test_repr_shows_who_but_no_secret(pki: Pki) -> None:
    shown = repr(KafkaConnection("k:9093", _tls(pki)))
    assert "SCRAM-SHA-512" in shown
    assert "'tablesync'" in shown
    assert PASSWORD not in shown
    assert pki.client_key_password not in shown


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    for name, value in {
        "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": "broker.example:9093",
        "TABLESYNC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "TABLESYNC_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
        "TABLESYNC_KAFKA__SASL_USERNAME": "svc",
        "TABLESYNC_KAFKA__SASL_PASSWORD": PASSWORD,
        "TABLESYNC_KAFKA__SSL_CA_FILE": str(pki.ca_file),
        "TABLESYNC_KAFKA__SSL_CHECK_HOSTNAME": "false",
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings()
    kwargs = KafkaConnection.from_settings(settings).client_kwargs()

    assert settings.kafka.sasl_password == SecretStr(PASSWORD)
    assert PASSWORD not in repr(settings)
    assert kwargs["bootstrap_servers"] == "broker.example:9093"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_password"] == PASSWORD
    assert not kwargs["ssl_context"].check_hostname


async def test_oauthbearer_fetches_client_credentials_tokens_once() -> None:
    forms: list[dict[str, str]] = []

    async def token(request: Request) -> Response:
        forms.append(dict(parse_qsl((await request.body()).decode())))
        return JSONResponse({"token_type": "Bearer", "expires_in": 3599, "access_token": "jwt-1"})

    app = Starlette(routes=[Route("/tenant/oauth2/v2.0/token", token, methods=["POST"])])
    async with serve(app) as url:
        settings = KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth_token_url=f"{url}/tenant/oauth2/v2.0/token",
            sasl_oauth_client_id="kafka-app",
            sasl_oauth_client_secret=SecretStr("oauth-secret"),
            sasl_oauth_scope="https://ns.servicebus.windows.net/.default",
        )
        kwargs = KafkaConnection("ns.servicebus.windows.net:9093", settings).client_kwargs()
        provider = kwargs["sasl_oauth_token_provider"]
        assert isinstance(provider, AbstractTokenProvider)
        assert "sasl_plain_password" not in kwargs
        assert [await provider.token(), await provider.token()] == ["jwt-1", "jwt-1"]

    assert forms == [
        {
            "grant_type": "client_credentials",
            "client_id": "kafka-app",
            "client_secret": "oauth-secret",
            "scope": "https://ns.servicebus.windows.net/.default",
        }
    ]


def _bare_clients(path: Path, root: Path = ROOT) -> list[str]:
    """Where ``path`` builds an aiokafka client without ``**<connection>.client_kwargs()``."""
    bare: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in CLIENTS:
            continue
        spread = [
            k.value
            for k in node.keywords
            if k.arg is None
            and isinstance(k.value, ast.Call)
            and getattr(k.value.func, "attr", None) == "client_kwargs"
        ]
        if not spread or any(k.arg == "bootstrap_servers" for k in node.keywords):
            bare.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return bare


def test_every_client_of_the_product_and_the_benches_gets_the_connection() -> None:
    sources = sorted((ROOT / "services" / "tablesync").rglob("*.py")) + sorted(
        (ROOT / "bench").rglob("*.py")
    )
    bare = [where for path in sources for where in _bare_clients(path)]
    assert not bare, "aiokafka clients without the security settings: " + ", ".join(bare)


def test_the_client_check_catches_a_bare_client(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "from aiokafka import AIOKafkaProducer\n"
        "a = AIOKafkaProducer(bootstrap_servers='k:1')\n"
        "b = AIOKafkaProducer(**kafka.client_kwargs(), acks='all')\n"
        "c = aiokafka.AIOKafkaConsumer('t', **kafka.client_kwargs(), bootstrap_servers='k:1')\n"
    )
    assert _bare_clients(module, tmp_path) == [
        "probe.py:2 AIOKafkaProducer",
        "probe.py:4 AIOKafkaConsumer",
    ]
