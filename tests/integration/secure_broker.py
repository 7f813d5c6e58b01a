"""A Kafka 4.1 broker of a test's own with one SASL_SSL listener, the way a
managed cluster is reached: TLS with a certificate of a CA the test made, a
client certificate required, and SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN logins.

The jars and Java are the ones ``tablesync.localinfra`` uses; the SCRAM users
are created by Kafka's own storage tool (``format --add-scram``) before the first
start, as an operator bootstraps a KRaft cluster. The broker runs in its own
directory on free ports and is stopped when the context ends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from tablesync.adapters.kafka import KafkaConnection
from tablesync.localinfra import procs
from tablesync.localinfra.kafka import broker_ready, require_java, resolve_jars
from tablesync.localinfra.paths import kafka_files
from tablesync.settings import KafkaSettings, SaslMechanism
from tests.conftest import unused_ports
from tests.pki import Pki, make_pki

__all__ = ["SCRAM_USERS", "SecureBroker", "secure_broker"]

# The broker's own login on its listener (it connects to itself as any client).
_BROKER_USER, _BROKER_PASSWORD = "broker", "broker-secret"
SCRAM_USERS: dict[SaslMechanism, tuple[str, str]] = {
    "SCRAM-SHA-512": ("tablesync", "tablesync-512-secret"),
    "SCRAM-SHA-256": ("tablesync-256", "tablesync-256-secret"),
    "PLAIN": ("tablesync-plain", "tablesync-plain-secret"),
}
_READY_TIMEOUT_S = 60.0
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    pki: Pki
    home: Path

    def security(
        self, mechanism: SaslMechanism = "SCRAM-SHA-512", **overrides: object
    ) -> KafkaSettings:
        """Settings that get tablesync in with ``mechanism``, changed by ``overrides``."""
        user, password = SCRAM_USERS[mechanism]
        values: dict[str, object] = {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": mechanism,
            "sasl_username": user,
            "sasl_password": SecretStr(password),
            "ssl_ca_file": self.pki.ca_file,
            "ssl_cert_file": self.pki.client_cert_file,
            "ssl_key_file": self.pki.client_key_file,
            "ssl_key_password": SecretStr(self.pki.client_key_password),
        }
        values.update(overrides)
        return KafkaSettings.model_validate(values)

    def connection(self, mechanism: SaslMechanism = "SCRAM-SHA-512") -> KafkaConnection:
        return KafkaConnection(self.bootstrap, self.security(mechanism))

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"


def _properties(home: Path, pki: Pki, port: int, controller_port: int) -> str:
    plain_users = " ".join(
        f'user_{user}="{password}"'
        for user, password in [(_BROKER_USER, _BROKER_PASSWORD), SCRAM_USERS["PLAIN"]]
    )
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        "controller.listener.names=CONTROLLER",
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        f'{_SCRAM} required username="{_BROKER_USER}" password="{_BROKER_PASSWORD}";',
        f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={_SCRAM} required;",
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f'{_PLAIN} required username="{_BROKER_USER}" password="{_BROKER_PASSWORD}" '
        f"{plain_users};",
        # Kafka reads PEM directly (KIP-651): the key and chain in one file.
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={pki.server_file}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={pki.ca_file}",
        # A SASL_SSL listener takes ssl.client.auth only with its listener prefix.
        "listener.name.sasl_ssl.ssl.client.auth=required",
        "ssl.endpoint.identification.algorithm=https",
        f"log.dirs={home / 'data'}",
        "auto.create.topics.enable=false",
        "num.partitions=3",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=3",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=3",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
    ]
    return "\n".join(lines) + "\n"


def _java_options() -> list[str]:
    log4j = kafka_files() / "log4j.properties"
    return [f"-Dlog4j.configuration=file:{log4j}", "-Dlog4j2.statusLoggerLevel=OFF"]


def _format(java: str, jars: Path, props: Path) -> None:
    # A KRaft cluster id is 16 random bytes, base64url without padding.
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    users = [(_BROKER_USER, _BROKER_PASSWORD, "SCRAM-SHA-512")] + [
        (user, password, mechanism)
        for mechanism, (user, password) in SCRAM_USERS.items()
        if mechanism.startswith("SCRAM")
    ]
    argv = [java, *_java_options(), "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format"]
    argv += ["-t", cluster_id, "-c", str(props)]
    for user, password, mechanism in users:
        argv += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    result = procs.run_tool(argv, timeout_s=120)
    if result.returncode != 0:
        raise RuntimeError(f"kafka-storage format failed:\n{result.stdout}{result.stderr}")


@contextlib.asynccontextmanager
async def secure_broker(home: Path) -> AsyncIterator[SecureBroker]:
    port, controller_port = unused_ports(2)
    pki = make_pki(home / "pki")
    props = home / "server.properties"
    props.write_text(_properties(home, pki, port, controller_port))
    java, jars = require_java(), await asyncio.to_thread(resolve_jars)
    await asyncio.to_thread(_format, java, jars, props)
    broker = SecureBroker(f"127.0.0.1:{port}", pki, home)
    argv = [java, "-Xmx512m", *_java_options(), "-cp", f"{jars}/*", "kafka.Kafka", str(props)]
    pid = procs.spawn_detached(argv, broker.log_path, os.environ)
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not await broker_ready(broker.connection(), 2.0):
            if not procs.pid_alive(pid):
                raise RuntimeError("the SASL_SSL broker exited" + procs.log_tail(broker.log_path))
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the SASL_SSL broker was not ready within {_READY_TIMEOUT_S:.0f} s"
                    + procs.log_tail(broker.log_path)
                )
            await asyncio.sleep(0.2)
        yield broker
    finally:
        await procs.terminate_group(pid, 20.0)
