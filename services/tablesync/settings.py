"""The one settings class. Every option is an environment variable ``TABLESYNC_*``;
sections use ``__`` (``TABLESYNC_BC__BASE_URL``). Built once by the runtime and
passed down; nothing below the runtime reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tablesync.errors import ConfigError

__all__ = [
    "ApiSettings",
    "EmulatorSettings",
    "ExtraClient",
    "HealthSettings",
    "KafkaSettings",
    "LocalInfraSettings",
    "Settings",
    "SyncSettings",
]

DEFAULT_TOKEN = "local-dev-token"
LEASE_VALID_SHARE = 0.8
"""The share of a singleton's lease its holder counts on after each renewal:
the rest covers the drift between its clock and the database's."""


ENTRA_AUTHORITY = "https://login.microsoftonline.com"
BC_ONLINE_API = "https://api.businesscentral.dynamics.com"
EMULATOR_URLS = {
    "bc": "http://127.0.0.1:7048/BC/api/v2.0",
    "dataverse": "http://127.0.0.1:7049/api/data/v9.2",
}

ApiSide = Literal["bc", "dataverse"]


class ExtraClient(BaseModel):
    """One more application user of a side (``extra_clients``): an Entra application
    with its own client id and secret, or, without a token endpoint, a static token."""

    client_id: str | None = None
    client_secret: SecretStr | None = None
    static_token: SecretStr | None = None


class ApiSettings(BaseModel):
    """How to reach one side's HTTP API (``TABLESYNC_BC__*``, ``TABLESYNC_DATAVERSE__*``).

    A real tenant needs only ``tenant_id``, the BC ``environment`` or the Dataverse
    ``org_url``, ``client_id`` and a client secret or certificate: the API's base
    URL, the token endpoint and the scope are derived from them (``resolved``)
    unless given. With none of them set, the local emulator is used."""

    base_url: str | None = Field(
        default=None,
        description=(
            "The API root. Derived when unset: BC "
            "https://api.businesscentral.dynamics.com/v2.0/<tenant_id>/<environment>/api/v2.0, "
            "Dataverse <org_url>/api/data/v9.2; else the local emulator's."
        ),
    )
    tenant_id: str | None = Field(
        default=None, description="Microsoft Entra tenant: its id (a GUID) or a domain name."
    )
    environment: str | None = Field(
        default=None, description="BC only: the environment's name, e.g. production."
    )
    org_url: str | None = Field(
        default=None, description="Dataverse only: https://<org>.crm<n>.dynamics.com."
    )
    authority_host: str = Field(
        default=ENTRA_AUTHORITY,
        description="Where the tenant's token endpoint is (a national cloud has its own).",
    )
    token_url: str | None = Field(
        default=None,
        description=(
            "OAuth 2.0 token endpoint; derived from tenant_id when unset "
            "(<authority_host>/<tenant_id>/oauth2/v2.0/token). Without either the static "
            "token is sent as the bearer."
        ),
    )
    client_id: str | None = Field(default=None, description="The Entra application (client) id.")
    client_secret: SecretStr | None = None
    client_certificate_file: Path | None = Field(
        default=None,
        description=(
            "Instead of a secret: the application's certificate, PEM (certificate and "
            "private key) or PKCS#12 (.pfx/.p12)."
        ),
    )
    client_certificate_key_file: Path | None = Field(
        default=None, description="The PEM private key, when not in client_certificate_file."
    )
    client_certificate_password: SecretStr | None = Field(
        default=None, description="Password of the private key or of the PKCS#12 file."
    )
    scope: str | None = Field(
        default=None,
        description=(
            "Derived when unset: BC https://api.businesscentral.dynamics.com/.default, "
            "Dataverse <org_url>/.default."
        ),
    )
    static_token: SecretStr | None = SecretStr(DEFAULT_TOKEN)
    extra_clients: list[ExtraClient] = Field(
        default_factory=list,
        description=(
            "More application users besides the one above, as JSON: "
            '[{"client_id": "...", "client_secret": "..."}] with OAuth, '
            '[{"static_token": "..."}] without. Both services limit requests per user, '
            "so each user adds its own budget and concurrency; requests go to the user "
            "with the most free capacity."
        ),
    )
    company_name: str | None = Field(
        default=None,
        description="BC only: the company to sync, by name; the first one when neither is set.",
    )
    company_id: str | None = Field(
        default=None, description="BC only: the company to sync, by id (wins over company_name)."
    )
    companies: list[str] = Field(
        default_factory=list,
        description=(
            "BC only: several companies to sync against the one Dataverse environment, as "
            'JSON, each by id or name: ["CRONUS USA, Inc.", "CRONUS Canada, Inc."]. Instead '
            "of company_id and company_name, which name a list of one."
        ),
    )
    api_routes: list[str] = Field(
        default_factory=list,
        description=(
            "BC only: custom API routes (publisher/group/version, as JSON) whose pages the "
            "mappings may name; their $metadata is read at start."
        ),
    )
    timeout_s: float = 30.0
    max_connections: int = 16
    max_retries: int = Field(default=8, description="Retries on 429, 5xx and connection errors.")
    backoff_base_s: float = 0.2
    backoff_max_s: float = 30.0
    page_size: int = Field(default=5000, description="Rows per page asked of the server.")
    batch_size: int = Field(
        default=500, description="Records per write batch ($batch on Dataverse)."
    )
    bulk_min: int = Field(
        default=10,
        description=(
            "Dataverse only: a write with at least this many records of one kind "
            "(create, upsert, update) sends them in bulk messages (CreateMultiple, "
            "UpsertMultiple, UpdateMultiple) rather than $batch; 0 never does."
        ),
    )
    bulk_size: int = Field(
        default=1000,
        description=(
            "Dataverse only: records per bulk message (1,000 is where Microsoft suggests "
            "starting; fewer when requests hit the message size or time limits)."
        ),
    )
    bulk_split_min: int = Field(
        default=200,
        description=(
            "Dataverse only: a bulk write of more records than this goes out as several "
            "requests side by side (within max_connections), each of at least this many "
            "records; 0 never splits. Fewer records a request: more requests in flight, "
            "and more requests per record."
        ),
    )

    def resolved(self, side: ApiSide) -> ApiSettings:
        """These settings with ``base_url``, ``token_url`` and ``scope`` filled in
        where they derive from the tenant; unchanged where given. Idempotent."""
        env = f"TABLESYNC_{side.upper()}__"
        if side == "bc":
            self.company_refs()
        elif self.companies or self.company_id or self.company_name:
            raise ConfigError(f"dataverse: {env}COMPANIES/COMPANY_ID/COMPANY_NAME are BC only")
        base_url = self.base_url
        if base_url is None and side == "bc" and (self.tenant_id or self.environment):
            if not (self.tenant_id and self.environment):
                missing = "ENVIRONMENT" if self.tenant_id else "TENANT_ID"
                raise ConfigError(
                    f"bc: {env}{missing} is needed to derive the BC API URL (or set {env}BASE_URL)"
                )
            base_url = (
                f"{BC_ONLINE_API}/v2.0/{quote(self.tenant_id, safe='')}/"
                f"{quote(self.environment, safe='')}/api/v2.0"
            )
        if base_url is None and side == "dataverse" and self.org_url:
            base_url = f"{self.org_url.rstrip('/')}/api/data/v9.2"
        token_url = self.token_url
        if token_url is None and self.tenant_id:
            token_url = (
                f"{self.authority_host.rstrip('/')}/{quote(self.tenant_id, safe='')}"
                "/oauth2/v2.0/token"
            )
        scope = self.scope
        if scope is None and token_url is not None:
            if side == "bc":
                scope = f"{BC_ONLINE_API}/.default"
            elif self.org_url or base_url:
                scope = f"{_origin(self.org_url or base_url or '')}/.default"
        return self.model_copy(
            update={
                "base_url": base_url or EMULATOR_URLS[side],
                "token_url": token_url,
                "scope": scope,
            }
        )

    def company_refs(self) -> list[str | None]:
        """The BC companies to sync, each an id or a name; ``[None]`` (the first
        company the environment lists) when none is named. Refuses a list with a
        company twice, or together with ``company_id``/``company_name``."""
        if not self.companies:
            return [self.company_id or self.company_name]
        if self.company_id or self.company_name:
            raise ConfigError(
                "bc: set TABLESYNC_BC__COMPANIES or TABLESYNC_BC__COMPANY_ID/COMPANY_NAME, not both"
            )
        cleaned = [c.strip() for c in self.companies]
        if any(not c for c in cleaned):
            raise ConfigError("bc: TABLESYNC_BC__COMPANIES has an empty entry")
        twice = sorted({c for c in cleaned if cleaned.count(c) > 1})
        if twice:
            raise ConfigError(f"bc: TABLESYNC_BC__COMPANIES names {twice[0]!r} twice")
        return list(cleaned)

    def url(self) -> str:
        """The base URL of settings that went through ``resolved``."""
        if self.base_url is None:
            raise ConfigError("the API settings were used before they were resolved")
        return self.base_url


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class KafkaSettings(BaseModel):
    """How every Kafka client of tablesync authenticates and encrypts
    (``TABLESYNC_KAFKA__*``); the brokers themselves are ``kafka_bootstrap_servers``."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = Field(
        default="PLAIN", description="With SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_username: str | None = Field(default=None, description="PLAIN and SCRAM.")
    sasl_password: SecretStr | None = Field(default=None, description="PLAIN and SCRAM.")
    sasl_oauth_token_url: str | None = Field(
        default=None, description="OAUTHBEARER: the OAuth 2.0 token endpoint (client credentials)."
    )
    sasl_oauth_client_id: str | None = None
    sasl_oauth_client_secret: SecretStr | None = None
    sasl_oauth_scope: str | None = None
    ssl_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CAs that sign the brokers' certificates (else the system's).",
    )
    ssl_cert_file: Path | None = Field(
        default=None, description="PEM client certificate (chain), for brokers that ask for one."
    )
    ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate."
    )
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted ssl_key_file."
    )
    ssl_check_hostname: bool = Field(
        default=True, description="Whether a broker's certificate must name the host dialled."
    )


class EmulatorSettings(BaseModel):
    """The local emulators of both APIs."""

    token: SecretStr = SecretStr(DEFAULT_TOKEN)
    host: str = "127.0.0.1"
    bc_port: int = 7048
    dataverse_port: int = 7049
    bc_database_url: SecretStr | None = Field(
        default=None, description="Defaults to the main server, database tablesync_bc."
    )
    dataverse_database_url: SecretStr | None = Field(
        default=None, description="Defaults to the main server, database tablesync_dataverse."
    )
    extra_tokens: list[SecretStr] = Field(
        default_factory=list,
        description=(
            "Bearer tokens accepted besides ``token``, as JSON; each is a user of its own, "
            "with its own limits."
        ),
    )
    requests_per_window: int = Field(
        default=6000, description="Service-protection budget per window before 429."
    )
    window_s: float = 5.0
    max_page_size: int = 5000
    bc_companies: list[str] = Field(
        default_factory=list,
        description=(
            "The names of the BC emulator's companies, as JSON, each with rows of its own; "
            "one, CRONUS USA, Inc., when empty."
        ),
    )
    untracked_tables: list[str] = Field(
        default_factory=list,
        description=(
            "Dataverse tables the emulator serves without change tracking (ChangeTrackingEnabled "
            "false); accounts, contacts, transactioncurrencies and systemusers have it on."
        ),
    )
    change_retention_s: float = Field(
        default=7 * 86400.0,
        description="How long a Dataverse delta token stays valid (ExpireChangeTrackingInDays).",
    )
    custom: Path | None = Field(
        default=None,
        description=(
            "A YAML file of custom tables, columns and API pages the emulators serve besides "
            "the catalog's, in their data API and their metadata alike."
        ),
    )
    real_limits: bool = Field(
        default=False,
        description=(
            "Enforce each service's documented per-user limits: the request budget (6,000 "
            "per 5 minutes, scaled to window_s; requests_per_window is then ignored), "
            "concurrency (BC 5 with 95 queued, Dataverse 52) and Dataverse's execution "
            "time (20 minutes per 5, scaled), with latency_ms and record_cost_ms."
        ),
    )
    latency_ms: float = Field(
        default=50.0, description="With real_limits: added to every request's response time."
    )
    record_cost_ms: float = Field(
        default=2.0,
        description=(
            "With real_limits: server time per record a request writes, part of its execution time."
        ),
    )


class LocalInfraSettings(BaseModel):
    """Where ``make infra-up`` keeps the local Kafka and PostgreSQL."""

    state_dir: Path = Path(".local")
    kafka_heap: str = "1g"
    ready_timeout_s: float = 90.0


class HealthSettings(BaseModel):
    """Liveness and readiness of each service process (``/livez``, ``/readyz``)."""

    port: int | None = Field(
        default=None, description="Serve /livez and /readyz on this port; off when unset."
    )
    host: str = "127.0.0.1"
    check_interval_s: float = Field(
        default=2.0, description="How often Kafka and PostgreSQL are asked whether they answer."
    )
    api_check_interval_s: float = Field(
        default=15.0,
        description=(
            "How often each side's API is asked; its requests count against the "
            "service-protection budget, so less often."
        ),
    )
    check_timeout_s: float = Field(
        default=3.0, description="A dependency that has not answered by then is down."
    )
    stale_after_s: float = Field(
        default=60.0,
        description="A service loop that has not come round for this long makes it not ready.",
    )


class SyncSettings(BaseModel):
    """Timing and sizing of the sync services."""

    poll_interval_s: float = Field(default=1.0, description="Capture polling period.")
    poll_overlap_s: float = Field(
        default=1.0, description="Capture re-reads this far behind its watermark."
    )
    lookback_s: float = Field(
        default=600.0,
        description=(
            "Every lookback_interval_s a poll re-reads this far behind the watermark, so a "
            "row committed after a later one was read (stamped before it) is still published."
        ),
    )
    lookback_interval_s: float = Field(
        default=30.0, description="How often a poll re-reads the whole look-back window."
    )
    reconcile_interval_s: float = Field(
        default=3600.0,
        description=(
            "How often capture reads every row's version of a table it polls by stamp and "
            "publishes the ones committed too late for the look-back (0: never)."
        ),
    )
    change_tracking: bool = Field(
        default=True, description="Capture follows Dataverse change tracking where a table has it."
    )
    capture_skips_echoes: bool = Field(
        default=True,
        description=(
            "Capture does not publish a row whose version every mapping reading its table "
            "recorded on the row's coupling already: tablesync's own write read back, which "
            "apply would count unchanged. Off: every version is published, and apply "
            "recognises its echoes (as it still does for one read before its coupling was "
            "committed). Snapshots of jobs and deletions are always published."
        ),
    )
    apply_batch_size: int = Field(
        default=1000, description="Most events apply takes in one batch (from all its partitions)."
    )
    apply_batch_wait_ms: int = 50
    continuous_job_interval_s: float = Field(
        default=60.0, description="Continuous work is rolled into one job row per interval."
    )
    keep_question_wait_s: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A full synchronization requested with the question open (the CLI on a "
            "terminal, the dashboard) waits this long at its end for the operator to "
            "answer whether to keep 'sync only coupled records' cleared; without an "
            "answer it is restored."
        ),
    )
    job_retention_days: float = Field(
        default=90.0,
        ge=0,
        description=(
            "Jobs that ended this many days ago are deleted with their counters, error rows "
            "and record log rows (and runs left without jobs), by the coordinator every "
            "hour, in batches of 1,000 rows; a job that has not ended is kept. 0 keeps "
            "every job."
        ),
    )
    stale_run_after_s: float = Field(
        default=600.0,
        ge=0,
        description=(
            "A run still requested or running while no coordinator has held its lease "
            "for this long is ended as cancelled when the next run is requested, so a "
            "coordinator that died for good does not block full synchronizations "
            "forever (a coordinator that comes back skips the released run's steps). "
            "0 never releases one; otherwise it must be longer than lease_ttl_s."
        ),
    )
    retry_backoff_s: float = Field(
        default=2.0, description="First retry delay of a pending record."
    )
    retry_backoff_max_s: float = 300.0
    delete_scan_interval_s: float = Field(
        default=30.0,
        description="How often capture compares coupled records with the ids that still exist.",
    )
    delete_scan_requests_per_min: float = Field(
        default=60.0,
        ge=0,
        description=(
            "Most API requests per minute, on average, the deletion scans of one side make "
            "(listing every id is a request per page): rounds are spaced further apart than "
            "delete_scan_interval_s when the tables are large. 60 is 5 % of the documented "
            "6,000 requests per 5 minutes; 0 does not limit them."
        ),
    )
    tracked_delete_scan_interval_s: float = Field(
        default=600.0,
        gt=0,
        description=(
            "How often capture also scans a table whose deletions change tracking reports, "
            "for those of records deleted before its delta link was taken."
        ),
    )
    delete_scan_max_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description=(
            "A deletion scan that would remove more than this share of a mapping's couplings "
            "(and more than delete_scan_min_cap records) stops, logs an error and raises "
            "tablesync_deletion_scan_halted_total instead."
        ),
    )
    delete_scan_min_cap: int = Field(
        default=10,
        ge=0,
        description="However small the share, a scan may remove this many records of a mapping.",
    )
    claim_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a batch of apply waits for records another instance of its mapping "
            "holds (two instances own the two records of a pair) before it tries again."
        ),
    )
    intent_timeout_s: float = Field(
        default=600.0,
        description=(
            "An announced create older than this, its source with no retry scheduled, "
            "was left by a process that died: apply settles it by reading its source "
            "again. Longer than a write can take with the API retries."
        ),
    )
    skip_after_failures: int = Field(
        default=5, description="Identical failures after which a record becomes skipped."
    )
    partitions: int = Field(default=6, description="Partitions of each topic tablesync creates.")
    mapping_file: Path | None = Field(
        default=None,
        description=(
            "What `tablesync mappings load` loads without a file; "
            "unset: the default mappings shipped with tablesync."
        ),
    )
    lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description=(
            "The lease of a singleton (the coordinator, capture of each side) lasts this "
            "long after each renewal. A holder cut off from the database stops within 80 % "
            "of it; a standby takes over within lease_ttl_s + lease_renew_s of a holder "
            "that died, and within lease_renew_s of one that stopped."
        ),
    )
    lease_renew_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a holder renews its lease and a standby tries to take it.",
    )

    @model_validator(mode="after")
    def _renewed_within_the_lease(self) -> SyncSettings:
        if self.lease_renew_s >= self.lease_ttl_s * LEASE_VALID_SHARE:
            raise ValueError(
                f"sync.lease_renew_s ({self.lease_renew_s}) must be shorter than 80 % of "
                f"sync.lease_ttl_s ({self.lease_ttl_s}): a holder renews several times "
                "within its lease"
            )
        if self.stale_run_after_s and self.stale_run_after_s <= self.lease_ttl_s:
            raise ValueError(
                f"sync.stale_run_after_s ({self.stale_run_after_s}) must be 0 or longer "
                f"than sync.lease_ttl_s ({self.lease_ttl_s}): a coordinator between two "
                "holds of its lease is not gone"
            )
        return self


SECRETS_DIR_ENV = "TABLESYNC_SECRETS_DIR"


class Settings(BaseSettings):
    """Every setting, from (in this order of precedence) the arguments, the
    environment, and files in the directory ``TABLESYNC_SECRETS_DIR`` names:
    one file per setting, named like its variable (``TABLESYNC_BC__CLIENT_SECRET``,
    any case), holding its value, as Docker (``/run/secrets``) and Kubernetes
    secret volumes lay them out."""

    model_config = SettingsConfigDict(
        env_prefix="TABLESYNC_", env_nested_delimiter="__", extra="ignore"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        directory = os.environ.get(SECRETS_DIR_ENV) or None
        files = NestedSecretsSettingsSource(
            file_secret_settings,
            secrets_dir=directory,
            # A directory named but missing is a mistake worth stopping for.
            secrets_dir_missing="error" if directory else "ok",
        )
        return init_settings, env_settings, dotenv_settings, files

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5433/tablesync"),
        description="PostgreSQL holding couplings, jobs and checkpoints.",
    )
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_replication_factor: int = Field(
        default=1, description="Replication factor of the topics tablesync creates."
    )
    kafka: KafkaSettings = KafkaSettings()
    topic_prefix: str = Field(default="", description="Prepended to every topic name.")
    log_format: Literal["console", "json", "auto"] = "auto"
    log_level: str = "info"
    admin_host: str = "127.0.0.1"
    admin_port: int = 8080
    admin_token: SecretStr = SecretStr(DEFAULT_TOKEN)

    fault_point: str | None = Field(
        default=None,
        description="Fault suite only: a point where the process kills itself (see faults.py).",
    )
    fault_after: int = Field(default=1, description="Fault suite only: on the Nth pass.")

    bc: ApiSettings = ApiSettings()
    dataverse: ApiSettings = ApiSettings()
    emulator: EmulatorSettings = EmulatorSettings()
    health: HealthSettings = HealthSettings()
    local: LocalInfraSettings = LocalInfraSettings()
    sync: SyncSettings = SyncSettings()

    @model_validator(mode="after")
    def _derive_api_urls(self) -> Settings:
        self.bc = self.bc.resolved("bc")
        self.dataverse = self.dataverse.resolved("dataverse")
        return self

    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()

    def emulator_dsn(self, side: Literal["bc", "dataverse"]) -> str:
        explicit = (
            self.emulator.bc_database_url if side == "bc" else self.emulator.dataverse_database_url
        )
        if explicit is not None:
            return explicit.get_secret_value()
        return with_database(self.database_dsn(), f"tablesync_{side}")


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials as ``dsn``, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password replaced, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
