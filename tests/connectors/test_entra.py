"""The whole token flow of a real tenant, against a stand-in of the Microsoft Entra
token endpoint on a real socket: the token URL and scopes derived from the tenant
settings, a client secret and a certificate assertion, the token cached and
renewed before it expires, and Entra's refusals (``invalid_client`` with
AADSTS7000215 for a wrong secret, AADSTS700027 for an expired certificate)
reported with their code, description and the setting to check."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from tablesync.adapters.odata import open_api
from tablesync.adapters.odata.bc import BcApi
from tablesync.adapters.odata.dataverse import DataverseApi
from tablesync.adapters.odata.http import ODataHttp
from tablesync.errors import ConfigError, TokenRefused
from tablesync.settings import SECRETS_DIR_ENV, ApiSettings, Settings
from tests.connectors.entra import BC_RESOURCE, COMPANY, Entra
from tests.connectors.fakes import FakeTime
from tests.connectors.servers import serve
from tests.pki import AppCertificate, make_app_certificate

TENANT = "7f3a1f5e-0c1d-4c59-9d7a-2b1d6f0e9a11"
CLIENT_ID = "3c5e2f4a-7b1d-4e8f-9a6c-1d2e3f4a5b6c"
SECRET = "Xy8~client-secret-value-never-logged"
ORG = "https://contoso.crm4.dynamics.com"


@pytest.fixture
async def entra() -> AsyncIterator[tuple[Entra, str]]:
    stand_in = Entra(TENANT, CLIENT_ID, ORG, secret=SECRET)
    async with serve(stand_in.app()) as url:
        yield stand_in, url


def _bc(url: str, **values: object) -> ApiSettings:
    """A real tenant's BC settings, the API root pointed at the stand-in."""
    return ApiSettings.model_validate(
        {
            "tenant_id": TENANT,
            "environment": "production",
            "authority_host": url,
            "base_url": f"{url}/v2.0/{TENANT}/production/api/v2.0",
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(SECRET),
            "max_retries": 2,
            "backoff_base_s": 0.01,
            **values,
        }
    )


def _dataverse(url: str, **values: object) -> ApiSettings:
    return ApiSettings.model_validate(
        {
            "tenant_id": TENANT,
            "org_url": ORG,
            "authority_host": url,
            "base_url": f"{url}/api/data/v9.2",
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(SECRET),
            "max_retries": 2,
            "backoff_base_s": 0.01,
            **values,
        }
    )


async def _accounts(api: DataverseApi) -> int:
    return sum([len(page) async for page in api.read_all("accounts")])


async def test_a_secret_gets_a_bc_token_from_the_derived_endpoint_and_scope(
    entra: tuple[Entra, str],
) -> None:
    stand_in, url = entra

    api = await open_api("bc", _bc(url))
    try:
        assert await api.company_id() == COMPANY["id"]
    finally:
        await api.aclose()

    assert stand_in.requests == [
        {
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": SECRET,
            "scope": "https://api.businesscentral.dynamics.com/.default",
        }
    ]
    assert [(i.resource, i.how) for i in stand_in.issued] == [(BC_RESOURCE, "secret")]


async def test_a_certificate_signs_an_assertion_entra_verifies(
    entra: tuple[Entra, str], tmp_path: Path
) -> None:
    stand_in, url = entra
    app_cert = make_app_certificate(tmp_path / "tablesync.pem", password="key-password")
    stand_in.certificates.append(app_cert.certificate)
    settings = _dataverse(
        url,
        client_secret=None,
        client_certificate_file=app_cert.file,
        client_certificate_password=SecretStr("key-password"),
    )

    api = DataverseApi(settings)
    try:
        assert await _accounts(api) == 1
    finally:
        await api.aclose()

    (form,) = stand_in.requests
    assert "client_secret" not in form
    assert form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert form["scope"] == f"{ORG}/.default"
    (assertion,) = stand_in.assertions
    assert assertion["header"]["alg"] == "PS256"
    claims = assertion["claims"]
    assert claims["aud"] == f"{url}/{TENANT}/oauth2/v2.0/token"
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - claims["nbf"] <= 600
    assert [(i.resource, i.how) for i in stand_in.issued] == [(ORG, "certificate")]


async def test_a_pkcs12_certificate_works_too(entra: tuple[Entra, str], tmp_path: Path) -> None:
    stand_in, url = entra
    app_cert = make_app_certificate(tmp_path / "tablesync.pfx", password="pfx-password")
    stand_in.certificates.append(app_cert.certificate)
    api = DataverseApi(
        _dataverse(
            url,
            client_secret=None,
            client_certificate_file=app_cert.file,
            client_certificate_password=SecretStr("pfx-password"),
        )
    )
    try:
        assert await _accounts(api) == 1
    finally:
        await api.aclose()
    assert [i.how for i in stand_in.issued] == ["certificate"]


async def test_the_token_is_cached_and_renewed_before_it_expires(
    entra: tuple[Entra, str], tmp_path: Path
) -> None:
    stand_in, url = entra
    stand_in.expires_in = 3599
    app_cert = make_app_certificate(tmp_path / "tablesync.pem")
    stand_in.certificates.append(app_cert.certificate)
    time = FakeTime()
    settings = _dataverse(url, client_secret=None, client_certificate_file=app_cert.file)
    api = DataverseApi(
        settings, http=ODataHttp("dataverse", settings, clock=time.clock, sleep=time.sleep)
    )
    try:
        for _ in range(5):
            await _accounts(api)
        assert [i.token for i in stand_in.issued] == ["token-1"]

        time.now += 3599 - 301  # five minutes before expiry: still the cached one
        await _accounts(api)
        assert [i.token for i in stand_in.issued] == ["token-1"]

        time.now += 2  # inside the last five minutes: renewed before it lapses
        await _accounts(api)
        assert [i.token for i in stand_in.issued] == ["token-1", "token-2"]
        assert stand_in.api_tokens[-1] == "token-2"
    finally:
        await api.aclose()
    # Each token request carried an assertion of its own.
    assert len({a["claims"]["jti"] for a in stand_in.assertions}) == 2


async def test_a_revoked_token_is_replaced_once(entra: tuple[Entra, str]) -> None:
    stand_in, url = entra
    api = DataverseApi(_dataverse(url))
    try:
        await _accounts(api)
        stand_in.revoked.add("token-1")
        assert await _accounts(api) == 1
    finally:
        await api.aclose()
    assert [i.token for i in stand_in.issued] == ["token-1", "token-2"]


async def test_a_wrong_secret_reports_entra_s_reason_and_the_setting(
    entra: tuple[Entra, str],
) -> None:
    stand_in, url = entra
    wrong = "not-the-secret-4b2e"

    with capture_logs() as logs, pytest.raises(TokenRefused) as refused:
        await open_api("bc", _bc(url, client_secret=SecretStr(wrong)))

    error = refused.value
    (body,) = stand_in.refusals
    assert (error.status, error.error, error.code) == (401, "invalid_client", "AADSTS7000215")
    assert error.description == body["error_description"]
    assert (error.trace_id, error.correlation_id) == (body["trace_id"], body["correlation_id"])
    message = str(error)
    assert message.startswith(f"bc: the token endpoint refused client '{CLIENT_ID}' (secret)")
    assert "401 invalid_client: AADSTS7000215: Invalid client secret provided." in message
    assert "check TABLESYNC_BC__CLIENT_SECRET" in message
    assert body["trace_id"] in message
    for text in (message, repr(logs)):
        assert wrong not in text
        assert SECRET not in text
    assert stand_in.issued == []


async def test_an_expired_certificate_reports_aadsts700027(
    entra: tuple[Entra, str], tmp_path: Path
) -> None:
    stand_in, url = entra
    app_cert = make_app_certificate(tmp_path / "expired.pem", expired=True)
    stand_in.certificates.append(app_cert.certificate)

    with pytest.raises(TokenRefused) as refused:
        await open_api("bc", _bc(url, client_secret=None, client_certificate_file=app_cert.file))

    error = refused.value
    assert (error.status, error.error, error.code) == (401, "invalid_client", "AADSTS700027")
    assert "is expired on application" in str(error)
    assert "(certificate)" in str(error)
    assert "check TABLESYNC_BC__CLIENT_CERTIFICATE_FILE" in str(error)


async def test_an_unknown_application_names_the_client_id(entra: tuple[Entra, str]) -> None:
    _, url = entra
    with pytest.raises(TokenRefused) as refused:
        await open_api("bc", _bc(url, client_id="00000000-0000-0000-0000-000000000000"))
    assert (refused.value.status, refused.value.code) == (400, "AADSTS700016")
    assert "check TABLESYNC_BC__CLIENT_ID" in str(refused.value)


def test_a_wrong_certificate_password_is_a_config_error(tmp_path: Path) -> None:
    app_cert: AppCertificate = make_app_certificate(tmp_path / "c.pem", password="right")
    settings = _dataverse(
        "http://127.0.0.1:9",
        client_secret=None,
        client_certificate_file=app_cert.file,
        client_certificate_password=SecretStr("wrong-password-9d1c"),
    )
    with pytest.raises(ConfigError) as refused:
        ODataHttp("dataverse", settings)
    assert "TABLESYNC_DATAVERSE__CLIENT_CERTIFICATE_PASSWORD" in str(refused.value)
    assert "wrong-password-9d1c" not in str(refused.value)


def _kubernetes_secret_volume(directory: Path, files: dict[str, str]) -> None:
    """The layout kubelet writes: the files in a timestamped directory, ``..data``
    linking to it, and one link per key."""
    stamped = directory / "..2026_01_01_00_00_00.000000000"
    stamped.mkdir(parents=True)
    for name, value in files.items():
        (stamped / name).write_text(value + "\n")
    (directory / "..data").symlink_to(stamped.name)
    for name in files:
        (directory / name).symlink_to(f"..data/{name}")


async def test_the_whole_flow_from_environment_and_secret_files(
    entra: tuple[Entra, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in, url = entra
    secrets = tmp_path / "secrets"
    _kubernetes_secret_volume(
        secrets,
        {"TABLESYNC_BC__CLIENT_SECRET": SECRET, "tablesync_dataverse__client_secret": SECRET},
    )
    for name in [n for n in os.environ if n.startswith("TABLESYNC_")]:
        monkeypatch.delenv(name)
    for name, value in {
        SECRETS_DIR_ENV: str(secrets),
        "TABLESYNC_BC__TENANT_ID": TENANT,
        "TABLESYNC_BC__ENVIRONMENT": "production",
        "TABLESYNC_BC__AUTHORITY_HOST": url,
        "TABLESYNC_BC__BASE_URL": f"{url}/v2.0/{TENANT}/production/api/v2.0",
        "TABLESYNC_BC__CLIENT_ID": CLIENT_ID,
        "TABLESYNC_BC__COMPANY_ID": COMPANY["id"].upper(),
        "TABLESYNC_DATAVERSE__TENANT_ID": TENANT,
        "TABLESYNC_DATAVERSE__ORG_URL": ORG,
        "TABLESYNC_DATAVERSE__AUTHORITY_HOST": url,
        "TABLESYNC_DATAVERSE__BASE_URL": f"{url}/api/data/v9.2",
        "TABLESYNC_DATAVERSE__CLIENT_ID": CLIENT_ID,
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings()
    assert settings.bc.client_secret == SecretStr(SECRET)
    assert SECRET not in repr(settings) and SECRET not in json.dumps(
        settings.model_dump(mode="json")
    )

    bc = await open_api("bc", settings.bc)
    dataverse = await open_api("dataverse", settings.dataverse)
    try:
        assert isinstance(bc, BcApi)
        assert await bc.company_id() == COMPANY["id"]
        assert isinstance(dataverse, DataverseApi)
        assert await _accounts(dataverse) == 1
    finally:
        await bc.aclose()
        await dataverse.aclose()
    assert [(i.resource, i.how) for i in stand_in.issued] == [
        (BC_RESOURCE, "secret"),
        (ORG, "secret"),
    ]
