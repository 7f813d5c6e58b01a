"""How every Kafka client of tablesync reaches the brokers: the bootstrap servers
and the security settings (``TABLESYNC_KAFKA__*``), turned into aiokafka's keyword
arguments in one place (``KafkaConnection.client_kwargs``).

- ``security_protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
- TLS (SSL, SASL_SSL): one ``ssl.SSLContext`` per process from aiokafka's
  ``create_ssl_context`` — the CA file (the system's CAs when unset), a client
  certificate and key (with the key's password) for brokers that ask for one, and
  hostname verification unless ``ssl_check_hostname`` is off.
- SASL: PLAIN and SCRAM-SHA-256/512 with a username and password; OAUTHBEARER with
  OAuth 2.0 client-credentials tokens, fetched and cached by one provider shared by
  every client of the process.

aiokafka reports a refused login or certificate only as "Unable to bootstrap",
which the services take for a broker that is away and retry forever. ``start``
asks the first broker directly why, and raises ``KafkaAuthError`` naming the
setting to fix; a broker that is simply away still raises aiokafka's error.
Secrets never appear in messages, logs or ``repr``."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Protocol

import httpx
import orjson
from aiokafka.abc import AbstractTokenProvider
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from tablesync.adapters.odata.auth import ClientCredentials, ClientSecret
from tablesync.errors import ApiUnavailable, ConfigError, KafkaAuthError
from tablesync.settings import KafkaSettings, Settings

__all__ = ["KafkaConnection", "Startable", "setting"]

_ENV = "TABLESYNC_KAFKA__"
_DIAGNOSE_TIMEOUT_S = 10.0
_TOKEN_TIMEOUT_S = 30.0
# OpenSSL's verify codes that mean "the certificate does not name this host".
_HOSTNAME_MISMATCH = frozenset({62, 64})


def setting(name: str) -> str:
    """The environment variable of one field of ``KafkaSettings``."""
    return f"{_ENV}{name.upper()}"


class Startable(Protocol):
    async def start(self) -> None: ...


class KafkaConnection:
    """The brokers and how to authenticate to them; built once per process."""

    def __init__(self, bootstrap_servers: str, security: KafkaSettings | None = None) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security = security or KafkaSettings()
        _check(self.security)
        self._ssl = _ssl_context(self.security) if self.uses_tls else None
        self._tokens = (
            _ClientCredentialsTokens(self.security)
            if self.uses_sasl and self.security.sasl_mechanism == "OAUTHBEARER"
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        return cls(settings.kafka_bootstrap_servers, settings.kafka)

    @property
    def uses_tls(self) -> bool:
        return self.security.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def client_kwargs(self) -> dict[str, Any]:
        """What every ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and
        ``AIOKafkaAdminClient`` of tablesync is given."""
        return {"bootstrap_servers": self.bootstrap_servers, **self._security_kwargs()}

    def _security_kwargs(self) -> dict[str, Any]:
        s = self.security
        kwargs: dict[str, Any] = {"security_protocol": s.security_protocol}
        if self._ssl is not None:
            kwargs["ssl_context"] = self._ssl
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = s.sasl_mechanism
            if self._tokens is not None:
                kwargs["sasl_oauth_token_provider"] = self._tokens
            else:
                assert s.sasl_password is not None  # _check
                kwargs["sasl_plain_username"] = s.sasl_username
                kwargs["sasl_plain_password"] = s.sasl_password.get_secret_value()
        return kwargs

    def __repr__(self) -> str:
        s = self.security
        who = f", user={s.sasl_username!r}" if self.uses_sasl and s.sasl_username else ""
        mechanism = f" {s.sasl_mechanism}" if self.uses_sasl else ""
        return f"KafkaConnection({self.bootstrap_servers!r}, {s.security_protocol}{mechanism}{who})"

    async def start(self, client: Startable) -> None:
        """``client.start()``; a broker refusing tablesync's login or certificate (or
        tablesync refusing the broker's) raises ``KafkaAuthError`` instead of
        aiokafka's connection error."""
        try:
            await client.start()
        except KafkaConnectionError as exc:
            # Without TLS or SASL there is nothing a broker could refuse.
            if self.security.security_protocol == "PLAINTEXT":
                raise
            refused = await self.diagnose()
            if refused is not None:
                raise refused from exc
            raise

    async def diagnose(self) -> KafkaAuthError | None:
        """Connects to the bootstrap brokers one by one and returns why the first
        that answers refused the connection; None when none refused it (they are
        away, or let tablesync in)."""
        for host, port, _ in collect_hosts(self.bootstrap_servers, randomize=False):
            try:
                async with asyncio.timeout(_DIAGNOSE_TIMEOUT_S):
                    conn = await create_conn(
                        host,
                        port,
                        client_id="tablesync-diagnose",
                        request_timeout_ms=int(_DIAGNOSE_TIMEOUT_S * 1000),
                        **self._security_kwargs(),
                    )
            except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
                return KafkaAuthError(self._login_refused(host, port, exc))
            except UnsupportedSaslMechanismError:
                return KafkaAuthError(
                    f"kafka: the broker at {host}:{port} does not offer "
                    f"{self.security.sasl_mechanism}; check {setting('sasl_mechanism')}"
                )
            except ssl.SSLCertVerificationError as exc:
                return KafkaAuthError(self._certificate_refused(host, port, exc))
            except ssl.SSLError as exc:
                return KafkaAuthError(self._handshake_failed(host, port, exc))
            except (KafkaError, OSError, TimeoutError):
                continue
            conn.close()
            return None
        return None

    def _login_refused(self, host: str, port: int, exc: Exception) -> str:
        s = self.security
        if s.sasl_mechanism == "OAUTHBEARER":
            fix = f"{setting('sasl_oauth_client_id')} and the token's audience and scope"
            who = f"client {s.sasl_oauth_client_id!r}"
        else:
            fix = f"{setting('sasl_username')} and {setting('sasl_password')}"
            who = f"user {s.sasl_username!r}"
        return (
            f"kafka: the broker at {host}:{port} refused the {s.sasl_mechanism} login of "
            f"{who} ({_reason(exc)}); check {fix}"
        )

    def _certificate_refused(self, host: str, port: int, exc: ssl.SSLCertVerificationError) -> str:
        reason = exc.verify_message or _reason(exc)
        if exc.verify_code in _HOSTNAME_MISMATCH:
            fix = (
                f"dial a name the certificate carries, or set {setting('ssl_check_hostname')}=false"
            )
        else:
            fix = (
                f"check {setting('ssl_ca_file')} "
                f"({self.security.ssl_ca_file or 'unset: the system CAs'})"
            )
        return (
            f"kafka: the certificate of the broker at {host}:{port} is not trusted "
            f"({reason}); {fix}"
        )

    def _handshake_failed(self, host: str, port: int, exc: ssl.SSLError) -> str:
        reason = exc.reason or _reason(exc)
        if "WRONG_VERSION_NUMBER" in str(reason).upper():
            fix = f"the listener does not speak TLS: check {setting('security_protocol')}"
        else:
            fix = (
                f"check {setting('ssl_cert_file')} and {setting('ssl_key_file')} "
                "if the broker asks for a client certificate"
            )
        return f"kafka: the TLS handshake with the broker at {host}:{port} failed ({reason}); {fix}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check(s: KafkaSettings) -> None:
    """Refuses settings that cannot work, naming what is missing."""
    sasl = s.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    wanted: list[str] = []
    if sasl and s.sasl_mechanism == "OAUTHBEARER":
        wanted = [
            "sasl_oauth_token_url",
            "sasl_oauth_client_id",
            "sasl_oauth_client_secret",
            "sasl_oauth_scope",
        ]
    elif sasl:
        wanted = ["sasl_username", "sasl_password"]
    missing = [setting(name) for name in wanted if getattr(s, name) in (None, "")]
    if missing:
        raise ConfigError(
            f"kafka: {s.security_protocol} with {s.sasl_mechanism} needs {', '.join(missing)}"
        )
    if s.ssl_key_file is not None and s.ssl_cert_file is None:
        raise ConfigError(
            f"kafka: {setting('ssl_key_file')} is set without {setting('ssl_cert_file')}"
        )


def _ssl_context(s: KafkaSettings) -> ssl.SSLContext:
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        path = getattr(s, name)
        if path is not None and not path.is_file():
            raise ConfigError(f"kafka: {setting(name)} {str(path)!r} is not a readable file")
    password = s.ssl_key_password.get_secret_value() if s.ssl_key_password else None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=s.ssl_ca_file,
            certfile=s.ssl_cert_file,
            keyfile=s.ssl_key_file,
            password=password,
        )
    except (ssl.SSLError, OSError) as exc:
        # The ssl module names neither the file nor the setting.
        raise ConfigError(
            "kafka: the TLS files cannot be loaded "
            f"({type(exc).__name__}: {_reason(exc)}); check {setting('ssl_ca_file')}, "
            f"{setting('ssl_cert_file')}, {setting('ssl_key_file')} and "
            f"{setting('ssl_key_password')}"
        ) from exc
    # create_ssl_context always verifies the hostname; some managed brokers are
    # dialled through addresses their certificates do not carry.
    context.check_hostname = s.ssl_check_hostname
    return context


class _ClientCredentialsTokens(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token provider: OAuth 2.0 client-credentials tokens
    from the configured endpoint, cached until shortly before they expire."""

    def __init__(self, s: KafkaSettings) -> None:
        assert s.sasl_oauth_token_url is not None
        assert s.sasl_oauth_client_id is not None
        assert s.sasl_oauth_client_secret is not None
        assert s.sasl_oauth_scope is not None
        self._credentials = ClientCredentials(
            _post_form,
            side="kafka",
            token_url=s.sasl_oauth_token_url,
            client_id=s.sasl_oauth_client_id,
            credential=ClientSecret(s.sasl_oauth_client_secret),
            scope=s.sasl_oauth_scope,
            names={
                "client_id": setting("sasl_oauth_client_id"),
                "client_secret": setting("sasl_oauth_client_secret"),
                "tenant_id": setting("sasl_oauth_token_url"),
                "scope": setting("sasl_oauth_scope"),
            },
        )

    async def token(self) -> str:
        return await self._credentials.token()


async def _post_form(url: str, form: dict[str, str]) -> tuple[int, Any]:
    try:
        async with httpx.AsyncClient(timeout=_TOKEN_TIMEOUT_S) as client:
            response = await client.post(url, data=form)
    except httpx.TransportError as exc:
        raise ApiUnavailable(f"token endpoint: {type(exc).__name__}", side="kafka") from exc
    try:
        body = orjson.loads(response.content) if response.content else None
    except orjson.JSONDecodeError:
        body = None
    return response.status_code, body
