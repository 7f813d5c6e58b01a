"""tablesync on a SASL_SSL broker, as on a managed cluster: every kind of client
it builds (producer, group consumer, admin, lag reader, replay's window) logs in
over TLS with SCRAM or PLAIN and a client certificate, a full synchronization of
the demo data runs through it, and refused credentials or certificates stop a
client within seconds with the setting to fix, never a retry loop."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from tablesync.adapters.avro import Codec
from tablesync.adapters.kafka import (
    BatchConsumer,
    KafkaConnection,
    KafkaPublisher,
    Message,
    TopicPartition,
    Topics,
    ensure_topics,
)
from tablesync.adapters.kafka.lag import GroupSpec, LagReader
from tablesync.adapters.kafka.window import KafkaWindow
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.pool import create_pool
from tablesync.composition import topics_for
from tablesync.errors import KafkaAuthError
from tablesync.ports.clock import SystemClock
from tablesync.runtime.operations import Operations
from tablesync.settings import KafkaSettings, SaslMechanism
from tests.integration.secure_broker import SecureBroker, secure_broker
from tests.integration.stack import DEFAULT_MAPPINGS, open_stack
from tests.integration.test_engine import check_full_sync_of_the_demo_data

pytestmark = pytest.mark.integration

WRONG_PASSWORD = "not-the-password-7f3a"
# A refusal is one round trip to the broker and one more to ask it why.
FAILS_WITHIN_S = 10.0


@pytest.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureBroker]:
    async with secure_broker(tmp_path_factory.mktemp("sasl-ssl")) as started:
        yield started


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_every_client_produces_consumes_and_commits_through_sasl_ssl(
    broker: SecureBroker, mechanism: SaslMechanism
) -> None:
    kafka = broker.connection(mechanism)
    topics = Topics(prefix=_prefix(), partitions=3)
    topic = topics.cdc("bc", "customers")
    since = datetime.now(UTC) - timedelta(seconds=5)
    await ensure_topics(kafka, [topics.cdc_spec("bc", "customers")])
    values = {f"value-{i}".encode() for i in range(12)}

    async with KafkaPublisher(kafka) as publisher:
        await publisher.publish_many(Message(topic, v, v) for v in sorted(values))

    group = f"{topics.prefix}apply"
    consumer = BatchConsumer(kafka, group, [topic])
    await consumer.start()
    try:
        seen: dict[bytes, tuple[TopicPartition, int]] = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(values):
            assert time.monotonic() < deadline, f"only {len(seen)} of {len(values)} arrived"
            batch = await consumer.next_batch(timeout_ms=500, max_records=100)
            for tp, records in batch.items():
                seen.update({r.value: (tp, r.offset) for r in records})
        last: dict[TopicPartition, int] = {}
        for tp, offset in seen.values():
            last[tp] = max(last.get(tp, -1), offset)
        await consumer.commit({tp: offset + 1 for tp, offset in last.items()})
    finally:
        await consumer.stop()
    assert set(seen) == values

    async with LagReader(kafka, client_id="tablesync-test") as reader:
        report = await reader.read([GroupSpec(group, (topic,), service="apply")])
    assert [p.lag for p in report.partitions] == [0, 0, 0]
    assert sum(p.committed or 0 for p in report.partitions) == len(values)

    window = await KafkaWindow(kafka).read([topic], since, None)
    assert {c.value for c in window} == values


async def test_a_wrong_password_fails_fast_and_names_the_setting(broker: SecureBroker) -> None:
    kafka = KafkaConnection(
        broker.bootstrap, broker.security(sasl_password=SecretStr(WRONG_PASSWORD))
    )
    publisher = KafkaPublisher(kafka)
    started = time.monotonic()
    with pytest.raises(KafkaAuthError) as refused:
        async with asyncio.timeout(FAILS_WITHIN_S * 3):
            await publisher.start()
    elapsed = time.monotonic() - started
    await publisher.stop()

    message = str(refused.value)
    assert elapsed < FAILS_WITHIN_S, f"took {elapsed:.1f} s"
    assert "TABLESYNC_KAFKA__SASL_PASSWORD" in message
    assert "SCRAM-SHA-512" in message
    assert "'tablesync'" in message
    assert WRONG_PASSWORD not in message
    assert WRONG_PASSWORD not in repr(kafka)


async def test_a_service_with_a_wrong_password_exits_naming_the_setting(
    broker: SecureBroker, state_dsn: str
) -> None:
    pool = await create_pool(state_dsn, max_size=1)
    try:
        await MappingStore(pool).replace_all(yaml.safe_load(DEFAULT_MAPPINGS.read_text()))
    finally:
        await pool.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}
    env.update(
        {
            "TABLESYNC_DATABASE_URL": state_dsn,
            "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "TABLESYNC_TOPIC_PREFIX": _prefix(),
            "TABLESYNC_LOG_FORMAT": "json",
            **_environment(broker.security(sasl_password=SecretStr(WRONG_PASSWORD))),
        }
    )
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tablesync.cli",
        "run",
        "coordinator",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    elapsed = time.monotonic() - started

    output = (out + err).decode()
    assert process.returncode == 2, output
    assert "TABLESYNC_KAFKA__SASL_PASSWORD" in err.decode(), output
    assert WRONG_PASSWORD not in output
    # The interpreter and the migrations take most of it; the refusal is immediate.
    assert elapsed < 30, f"took {elapsed:.1f} s"


async def test_an_untrusted_broker_certificate_names_the_ca_setting(broker: SecureBroker) -> None:
    kafka = KafkaConnection(broker.bootstrap, broker.security(ssl_ca_file=broker.pki.other_ca_file))
    publisher = KafkaPublisher(kafka)
    with pytest.raises(KafkaAuthError) as refused:
        async with asyncio.timeout(FAILS_WITHIN_S * 3):
            await publisher.start()
    await publisher.stop()
    assert "TABLESYNC_KAFKA__SSL_CA_FILE" in str(refused.value)
    assert "certificate verify failed" in str(refused.value) or "not trusted" in str(refused.value)


async def test_the_broker_refuses_a_client_without_its_certificate(broker: SecureBroker) -> None:
    """What makes the certificate in every other test count: without it, no way in."""
    kafka = KafkaConnection(
        broker.bootstrap,
        broker.security(ssl_cert_file=None, ssl_key_file=None, ssl_key_password=None),
    )
    publisher = KafkaPublisher(kafka)
    with pytest.raises(KafkaConnectionError):
        async with asyncio.timeout(FAILS_WITHIN_S * 3):
            await publisher.start()
    await publisher.stop()


async def test_full_sync_of_the_demo_data_through_sasl_ssl(
    broker: SecureBroker, state_dsn: str
) -> None:
    async with open_stack(
        kafka=broker.bootstrap,
        kafka_security=broker.security("SCRAM-SHA-256"),
        state_dsn=state_dsn,
        topic_prefix=_prefix(),
    ) as stack:
        await stack.start()
        kafka = KafkaConnection.from_settings(stack.settings)
        assert kafka.uses_tls and kafka.uses_sasl
        async with KafkaPublisher(kafka) as publisher:
            ops = Operations(
                JobStore(stack.pool), publisher, Codec(), topics_for(stack.settings), SystemClock()
            )
            await check_full_sync_of_the_demo_data(stack, ops)


def _environment(security: KafkaSettings) -> dict[str, str]:
    """``security`` as the ``TABLESYNC_KAFKA__*`` variables of another process."""
    env: dict[str, str] = {}
    for name, value in security.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        env[f"TABLESYNC_KAFKA__{name.upper()}"] = text
    return env
