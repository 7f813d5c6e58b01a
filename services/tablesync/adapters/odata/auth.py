"""Bearer tokens for one side: a static token, or OAuth 2.0 client credentials.

Client credentials follow the Microsoft identity platform's flow: a form POST of
``grant_type=client_credentials``, ``client_id`` and ``scope`` to the token endpoint,
with the client authenticated by one of

- a secret: ``client_secret``;
- a certificate (``ClientCertificate``): ``client_assertion_type=urn:ietf:params:oauth:
  client-assertion-type:jwt-bearer`` and ``client_assertion``, a JWT signed with the
  certificate's private key ("Microsoft identity platform application authentication
  certificate credentials": header ``alg`` PS256, ``typ`` JWT, ``x5t#S256`` the
  base64url SHA-256 thumbprint of the certificate; claims ``aud`` the token endpoint,
  ``iss`` and ``sub`` the client id, a unique ``jti``, ``nbf``/``iat`` now and ``exp``
  ten minutes on; RSASSA-PSS with SHA-256).

The answer carries ``access_token``, ``token_type`` and ``expires_in`` (seconds). The
token is cached and renewed ahead of expiry; a 401 from the API invalidates it once
(``invalidate``) so the next call fetches a new one. A refusal raises ``TokenRefused``
with Entra's ``error``, ``error_description`` and ``AADSTS`` code, and the setting to
look at where the code says which. Token values, secrets and keys never appear in
messages or logs."""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from pydantic import SecretStr

from tablesync.errors import ApiAuthError, ApiUnavailable, ConfigError, TokenRefused

__all__ = [
    "ClientCertificate",
    "ClientCredential",
    "ClientCredentials",
    "ClientSecret",
    "StaticToken",
    "TokenPost",
    "TokenSource",
]

TokenPost = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]
"""Sends a form to a URL without authorization; returns (status, parsed JSON body)."""

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Renew this long before expiry, at most: long enough that a request in flight never
# carries a token that lapses on the way, short enough for minutes-long test tokens.
_MAX_EARLY_S = 300.0
_EARLY_FRACTION = 0.1
# The documented upper bound for an assertion's lifetime is 5 to 10 minutes after nbf.
_ASSERTION_LIFETIME_S = 600
_AADSTS = re.compile(r"\bAADSTS(\d+)\b")
# Entra's codes that point at one setting: what an operator checks first.
_CODE_SETTING = {
    "7000215": "client_secret",  # invalid client secret
    "7000222": "client_secret",  # the secret has expired
    "700027": "client_certificate_file",  # assertion not signed by a valid certificate
    "700024": "client_certificate_file",  # assertion outside its time range (the clock)
    "700016": "client_id",  # application not found in the tenant
    "90002": "tenant_id",  # tenant not found
    "900023": "tenant_id",  # tenant id malformed
    "500011": "scope",  # resource principal not found in the tenant
    "1002012": "scope",  # scope malformed
    "70011": "scope",  # invalid scope
}


class TokenSource(Protocol):
    """Where a connector gets its bearer token from."""

    @property
    def refreshable(self) -> bool:
        """Whether a rejected token can be replaced by fetching a new one."""
        ...

    async def token(self) -> str: ...

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is the cached one (the API refused it)."""
        ...


class StaticToken:
    """A fixed bearer token (the emulators' ``local-dev-token``, or one from elsewhere)."""

    refreshable = False

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token.get_secret_value()

    def invalidate(self, token: str) -> None:
        return None


class ClientCredential(Protocol):
    """How the client proves who it is in a token request."""

    kind: str

    def form(self, client_id: str, token_url: str) -> dict[str, str]:
        """The fields of the token request that authenticate the client."""
        ...


class ClientSecret:
    kind = "secret"

    def __init__(self, secret: SecretStr) -> None:
        self._secret = secret

    def form(self, client_id: str, token_url: str) -> dict[str, str]:
        return {"client_secret": self._secret.get_secret_value()}


class ClientCertificate:
    """A certificate credential: each token request carries a fresh JWT assertion
    signed with the certificate's RSA key. ``wall`` is the clock of the claims
    (seconds since the epoch, as Entra checks them)."""

    kind = "certificate"

    def __init__(
        self,
        certificate: x509.Certificate,
        key: rsa.RSAPrivateKey,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.certificate = certificate
        self._key = key
        self._wall = wall
        thumbprint = certificate.fingerprint(hashes.SHA256())
        self.thumbprint_sha256 = thumbprint.hex().upper()
        self._x5t_s256 = _b64url(thumbprint)

    @classmethod
    def from_files(
        cls,
        certificate_file: Path,
        *,
        key_file: Path | None = None,
        password: SecretStr | None = None,
        wall: Callable[[], float] = time.time,
        names: Mapping[str, str] | None = None,
    ) -> ClientCertificate:
        """From a PEM file holding the certificate (and, unless ``key_file`` is given,
        its private key), or from a PKCS#12 file (``.pfx``/``.p12``). ``names``: the
        settings the files came from, for messages."""
        named = dict(names or {})
        secret = password.get_secret_value().encode() if password is not None else None
        try:
            data = certificate_file.read_bytes()
            if certificate_file.suffix.lower() in (".pfx", ".p12"):
                key, certificate, _ = pkcs12.load_key_and_certificates(data, secret)
            else:
                certificate = x509.load_pem_x509_certificate(data)
                key_data = key_file.read_bytes() if key_file is not None else data
                key = serialization.load_pem_private_key(key_data, secret)
        except (OSError, ValueError, TypeError) as exc:
            # ValueError: not PEM, a wrong or missing password; TypeError: a password
            # given for an unencrypted key or none for an encrypted one.
            files = ", ".join(
                named.get(n, n)
                for n in ("client_certificate_file", "client_certificate_key_file")
                if n != "client_certificate_key_file" or key_file is not None
            )
            raise ConfigError(
                f"the client certificate cannot be loaded ({type(exc).__name__}: "
                f"{_first_line(str(exc))}); check {files} and "
                f"{named.get('client_certificate_password', 'client_certificate_password')}"
            ) from exc
        if certificate is None or not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(
                f"{named.get('client_certificate_file', 'client_certificate_file')}: "
                "Microsoft Entra ID takes certificates with an RSA key"
            )
        return cls(certificate, key, wall=wall)

    def form(self, client_id: str, token_url: str) -> dict[str, str]:
        return {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(client_id, token_url),
        }

    def assertion(self, client_id: str, token_url: str) -> str:
        now = int(self._wall())
        header = {"alg": "PS256", "typ": "JWT", "x5t#S256": self._x5t_s256}
        claims = {
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME_S,
        }
        signing_input = f"{_b64url(orjson.dumps(header))}.{_b64url(orjson.dumps(claims))}"
        signature = self._key.sign(
            signing_input.encode("ascii"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
            hashes.SHA256(),
        )
        return f"{signing_input}.{_b64url(signature)}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class _Cached:
    value: str
    refresh_at: float
    expires_at: float


class ClientCredentials:
    """OAuth 2.0 client-credentials tokens, cached until shortly before they expire.

    ``names`` maps ``client_id``, ``client_secret``, ``client_certificate_file``,
    ``tenant_id`` and ``scope`` to the settings that hold them, so a refusal can say
    which one to check."""

    refreshable = True

    def __init__(
        self,
        post: TokenPost,
        *,
        side: str,
        token_url: str,
        client_id: str,
        credential: ClientCredential,
        scope: str,
        clock: Callable[[], float] = time.monotonic,
        names: Mapping[str, str] | None = None,
    ) -> None:
        self._post = post
        self._side = side
        self._token_url = token_url
        self._client_id = client_id
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._names = dict(names or {})
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.value
        # One fetch at a time: concurrent callers wait for it instead of each asking.
        async with self._lock:
            cached = self._cached
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.value
            try:
                self._cached = await self._fetch()
            except ApiUnavailable:
                # The endpoint is down but the old token still works: keep using it.
                if cached is not None and self._clock() < cached.expires_at:
                    return cached.value
                raise
            return self._cached.value

    def invalidate(self, token: str) -> None:
        if self._cached is not None and self._cached.value == token:
            self._cached = None

    async def _fetch(self) -> _Cached:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            **self._credential.form(self._client_id, self._token_url),
            "scope": self._scope,
        }
        started = self._clock()
        status, body = await self._post(self._token_url, form)
        if status >= 400:
            raise self._refused(status, body)
        value = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            raise ApiAuthError("token endpoint answered without an access_token", side=self._side)
        lifetime = _expires_in(body)
        early = min(_MAX_EARLY_S, lifetime * _EARLY_FRACTION)
        structlog.get_logger().info(
            "odata.token_fetched",
            side=self._side,
            client_id=self._client_id,
            credential=self._credential.kind,
            expires_in=lifetime,
        )
        return _Cached(value, started + lifetime - early, started + lifetime)

    def _refused(self, status: int, body: Any) -> TokenRefused:
        """RFC 6749 section 5.2's error, with what Microsoft Entra adds to it."""
        fields = body if isinstance(body, dict) else {}
        error = str(fields.get("error") or "error")
        description = str(fields.get("error_description") or "").strip()
        found = _AADSTS.search(description)
        codes = fields.get("error_codes")
        code = (
            f"AADSTS{found.group(1)}"
            if found
            else f"AADSTS{codes[0]}"
            if isinstance(codes, list) and codes and isinstance(codes[0], int)
            else None
        )
        trace_id = _text(fields.get("trace_id"))
        correlation_id = _text(fields.get("correlation_id"))
        summary = _first_line(description) or (code or "(no description)")
        if code is not None and code not in summary:
            summary = f"{code}: {summary}"
        message = (
            f"the token endpoint refused client {self._client_id!r} "
            f"({self._credential.kind}): {status} {error}: {summary}"
        )
        setting = self._names.get(_CODE_SETTING.get(code[6:], "")) if code else None
        if setting:
            message += f"; check {setting}"
        if trace_id or correlation_id:
            message += f" (trace id {trace_id or '-'}, correlation id {correlation_id or '-'})"
        if body is None:
            message += " (no error body)"
        return TokenRefused(
            message,
            side=self._side,
            status=status,
            error=error,
            description=description,
            code=code,
            trace_id=trace_id,
            correlation_id=correlation_id,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


def _expires_in(body: dict[str, Any]) -> float:
    raw = body.get("expires_in")
    try:
        # Entra ID sends a number; some older endpoints send it as a string.
        lifetime = float(raw) if raw is not None else 3600.0
    except (TypeError, ValueError):
        lifetime = 3600.0
    return max(0.0, lifetime)
