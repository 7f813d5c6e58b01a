"""A real tenant's URLs and scopes derived from its few settings; the emulators'
defaults unchanged; secrets read from files the way Docker and Kubernetes mount them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from pydantic_settings import SettingsError

from tablesync.errors import ConfigError
from tablesync.settings import SECRETS_DIR_ENV, ApiSettings, Settings, SyncSettings

TENANT = "contoso.onmicrosoft.com"


@pytest.fixture(autouse=True)
def no_tablesync_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TABLESYNC_")]:
        monkeypatch.delenv(name)


def test_without_a_tenant_the_emulators_are_used_as_before() -> None:
    settings = Settings()
    assert settings.bc.base_url == "http://127.0.0.1:7048/BC/api/v2.0"
    assert settings.dataverse.base_url == "http://127.0.0.1:7049/api/data/v9.2"
    for api in (settings.bc, settings.dataverse):
        assert (api.token_url, api.scope) == (None, None)
        assert api.static_token == SecretStr("local-dev-token")


def test_one_option_alone_keeps_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_BC__PAGE_SIZE", "100")
    settings = Settings()
    assert settings.bc.page_size == 100
    assert settings.bc.base_url == "http://127.0.0.1:7048/BC/api/v2.0"


def test_bc_derives_its_api_url_token_endpoint_and_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_BC__TENANT_ID", TENANT)
    monkeypatch.setenv("TABLESYNC_BC__ENVIRONMENT", "production")
    bc = Settings().bc
    assert bc.base_url == (
        f"https://api.businesscentral.dynamics.com/v2.0/{TENANT}/production/api/v2.0"
    )
    assert bc.token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert bc.scope == "https://api.businesscentral.dynamics.com/.default"


def test_dataverse_derives_from_its_org_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABLESYNC_DATAVERSE__TENANT_ID", TENANT)
    monkeypatch.setenv("TABLESYNC_DATAVERSE__ORG_URL", "https://contoso.crm4.dynamics.com/")
    dataverse = Settings().dataverse
    assert dataverse.base_url == "https://contoso.crm4.dynamics.com/api/data/v9.2"
    assert dataverse.token_url == (f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    assert dataverse.scope == "https://contoso.crm4.dynamics.com/.default"


def test_what_is_given_wins_over_what_is_derived() -> None:
    given_ = ApiSettings(
        tenant_id=TENANT,
        environment="sandbox",
        base_url="https://proxy.example/bc/api/v2.0",
        token_url="https://sts.example/token",
        scope="https://api.businesscentral.dynamics.com/Financials.ReadWrite.All",
    ).resolved("bc")
    assert given_.base_url == "https://proxy.example/bc/api/v2.0"
    assert given_.token_url == "https://sts.example/token"
    assert given_.scope == "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All"


def test_a_national_cloud_has_its_own_authority() -> None:
    bc = ApiSettings(
        tenant_id=TENANT,
        environment="production",
        authority_host="https://login.microsoftonline.us",
    ).resolved("bc")
    assert bc.token_url == f"https://login.microsoftonline.us/{TENANT}/oauth2/v2.0/token"


def test_dataverse_with_only_a_base_url_takes_its_scope_from_it() -> None:
    dataverse = ApiSettings(
        tenant_id=TENANT, base_url="https://contoso.crm.dynamics.com/api/data/v9.2"
    ).resolved("dataverse")
    assert dataverse.scope == "https://contoso.crm.dynamics.com/.default"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"tenant_id": TENANT}, "TABLESYNC_BC__ENVIRONMENT"),
        ({"environment": "production"}, "TABLESYNC_BC__TENANT_ID"),
    ],
)
def test_half_a_bc_tenant_is_refused_naming_the_other_half(
    values: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        ApiSettings.model_validate(values).resolved("bc")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=30)


@given(tenant=names, environment=names, side=st.sampled_from(["bc", "dataverse"]))
def test_resolving_twice_changes_nothing(tenant: str, environment: str, side: str) -> None:
    settings = ApiSettings(
        tenant_id=tenant, environment=environment, org_url=f"https://{environment}.crm.dynamics.com"
    )
    once = settings.resolved(side)  # type: ignore[arg-type]
    assert once.resolved(side) == once  # type: ignore[arg-type]


def test_secrets_come_from_files_named_like_their_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "TABLESYNC_BC__CLIENT_SECRET").write_text("bc-secret\n")
    (tmp_path / "tablesync_kafka__sasl_password").write_text("kafka-password")
    (tmp_path / "TABLESYNC_DATABASE_URL").write_text("postgresql://u:file@db/tablesync\n")
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("TABLESYNC_DATABASE_URL", "postgresql://u:env@db/tablesync")

    settings = Settings()

    assert settings.bc.client_secret == SecretStr("bc-secret")
    assert settings.kafka.sasl_password == SecretStr("kafka-password")
    # The environment wins over a file.
    assert settings.database_dsn() == "postgresql://u:env@db/tablesync"
    # The rest of a section still comes from its defaults.
    assert settings.bc.base_url == "http://127.0.0.1:7048/BC/api/v2.0"


def test_a_secrets_directory_that_is_not_there_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRETS_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="does not exist"):
        Settings()


def test_a_stale_run_bound_within_the_coordinators_lease_is_refused() -> None:
    # A coordinator between two renewals is not gone: releasing its run then
    # would end a run that is being worked on.
    with pytest.raises(ValueError, match=r"stale_run_after_s \(10.0\) must be 0 or longer"):
        SyncSettings(stale_run_after_s=10.0, lease_ttl_s=10.0)
    assert SyncSettings(stale_run_after_s=0).stale_run_after_s == 0
    assert SyncSettings().stale_run_after_s > SyncSettings().lease_ttl_s
