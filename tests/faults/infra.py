"""A Kafka broker and a PostgreSQL server of the fault suite's own, on free
ports with their own state directory, so stopping them never disturbs the
servers other tests use."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tablesync import localinfra
from tablesync.localinfra import kafka, postgres
from tablesync.localinfra.network import free_ports
from tablesync.settings import LocalInfraSettings, Settings

__all__ = ["FaultInfra", "Secrets", "free_ports", "start_infra"]


@dataclass(frozen=True)
class Secrets:
    """Every secret the services are given; none may ever reach a log."""

    db_password: str
    bc_token: str
    dv_token: str
    dv_client_secret: str
    admin_token: str

    @classmethod
    def generate(cls) -> Secrets:
        def one(kind: str) -> str:
            return f"{kind}-{secrets.token_hex(12)}"

        return cls(one("dbpw"), one("bctok"), one("dvtok"), one("dvsecret"), one("admtok"))

    def all(self) -> dict[str, str]:
        return {
            "database password": self.db_password,
            "BC token": self.bc_token,
            "Dataverse access token": self.dv_token,
            "Dataverse client secret": self.dv_client_secret,
            "admin token": self.admin_token,
        }


@dataclass(frozen=True)
class FaultInfra:
    settings: Settings
    controller_port: int
    secrets: Secrets

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers

    @property
    def state_dsn(self) -> str:
        return self.settings.database_dsn()

    @property
    def superuser_dsn(self) -> str:
        """The server's superuser (trust authentication on the local server)."""
        port = urlsplit(self.state_dsn).port
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def emulator_dsn(self, side: str) -> str:
        return self.settings.emulator_dsn("bc" if side == "bc" else "dataverse")

    async def stop_broker(self) -> None:
        await kafka.down(self.settings)

    async def start_broker(self) -> None:
        await kafka.up(self.settings, controller_port=self.controller_port)

    async def stop_postgres(self) -> None:
        await postgres.down(self.settings)

    async def start_postgres(self) -> None:
        await postgres.up(self.settings)

    async def ensure_up(self) -> None:
        """Both servers answering (idempotent)."""
        await localinfra.up_async(self.settings, kafka_controller_port=self.controller_port)

    async def purge(self) -> None:
        await localinfra.purge_async(self.settings)


async def start_infra(state_dir: Path) -> FaultInfra:
    """Starts the suite's own servers. The role has a password, so the services
    run with a database URL that carries one."""
    kafka_port, controller_port, postgres_port = free_ports(3)
    found = Secrets.generate()
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}",
        database_url=(
            f"postgresql://tsfaults:{found.db_password}@127.0.0.1:{postgres_port}/tablesync_faults"
        ),
        local=LocalInfraSettings(state_dir=state_dir, ready_timeout_s=120.0),
    )
    infra = FaultInfra(settings, controller_port, found)
    try:
        await infra.ensure_up()
    except BaseException:
        await infra.purge()
        raise
    return infra
