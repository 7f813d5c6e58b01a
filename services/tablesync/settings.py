"""The one settings class. Every option is an environment variable ``TABLESYNC_*``;
sections use ``__`` (``TABLESYNC_BC__BASE_URL``). Built once by the runtime and
passed down; nothing below the runtime reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ApiSettings", "EmulatorSettings", "LocalInfraSettings", "Settings", "SyncSettings"]

DEFAULT_TOKEN = "local-dev-token"
LEASE_VALID_SHARE = 0.8
"""The share of a singleton's lease its holder counts on after each renewal:
the rest covers the drift between its clock and the database's."""


class ApiSettings(BaseModel):
    """How to reach one side's HTTP API."""

    base_url: str
    token_url: str | None = Field(
        default=None,
        description="OAuth2 token endpoint; when unset the static token is sent as the bearer.",
    )
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    static_token: SecretStr | None = SecretStr(DEFAULT_TOKEN)
    company_name: str | None = Field(
        default=None, description="BC only: the company to sync; the first one when unset."
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
    requests_per_window: int = Field(
        default=6000, description="Service-protection budget per window before 429."
    )
    window_s: float = 5.0
    max_page_size: int = 5000


class LocalInfraSettings(BaseModel):
    """Where ``make infra-up`` keeps the local Kafka and PostgreSQL."""

    state_dir: Path = Path(".local")
    kafka_heap: str = "1g"
    ready_timeout_s: float = 90.0


class SyncSettings(BaseModel):
    """Timing and sizing of the sync services."""

    poll_interval_s: float = Field(default=1.0, description="Capture polling period.")
    poll_overlap_s: float = Field(
        default=1.0, description="Capture re-reads this far behind its watermark."
    )
    apply_batch_size: int = Field(
        default=1000, description="Most events apply takes in one batch (from all its partitions)."
    )
    apply_batch_wait_ms: int = 50
    continuous_job_interval_s: float = Field(
        default=60.0, description="Continuous work is rolled into one job row per interval."
    )
    retry_backoff_s: float = Field(
        default=2.0, description="First retry delay of a pending record."
    )
    retry_backoff_max_s: float = 300.0
    delete_scan_interval_s: float = Field(
        default=30.0,
        description="How often capture compares coupled records with the ids that still exist.",
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
    mapping_file: Path = Path("mappings/default.yaml")
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
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TABLESYNC_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5433/tablesync"),
        description="PostgreSQL holding couplings, jobs and checkpoints.",
    )
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_replication_factor: int = Field(
        default=1, description="Replication factor of the topics tablesync creates."
    )
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

    bc: ApiSettings = ApiSettings(base_url="http://127.0.0.1:7048/BC/api/v2.0")
    dataverse: ApiSettings = ApiSettings(base_url="http://127.0.0.1:7049/api/data/v9.2")
    emulator: EmulatorSettings = EmulatorSettings()
    local: LocalInfraSettings = LocalInfraSettings()
    sync: SyncSettings = SyncSettings()

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
