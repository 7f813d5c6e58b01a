"""A stand-in of the Microsoft Entra ID token endpoint (v2.0, client credentials
grant) and of the two APIs behind it, answering as the Microsoft identity
platform documents:

- ``POST /<tenant>/oauth2/v2.0/token`` with ``grant_type=client_credentials``,
  ``client_id``, ``scope`` (``<resource>/.default``) and either ``client_secret`` or
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
  with ``client_assertion``, a JWT (header ``alg`` PS256 or RS256, ``x5t#S256`` or
  ``x5t``; claims ``aud`` = this endpoint, ``iss`` = ``sub`` = the client id, ``jti``,
  ``nbf``, ``exp``) signed with a certificate registered on the application;
- success: 200 ``{"token_type": "Bearer", "expires_in": n, "ext_expires_in": n,
  "access_token": ...}``;
- refusal: ``{"error", "error_description" ("AADSTSnnn: ...\\r\\nTrace ID: ...\\r\\n
  Correlation ID: ...\\r\\nTimestamp: ..."), "error_codes": [n], "timestamp",
  "trace_id", "correlation_id", "error_uri"}``; 401 ``invalid_client`` for a wrong
  secret (AADSTS7000215) and for an assertion whose certificate expired
  (AADSTS700027), 400 for an unknown application (AADSTS700016) or scope.

The BC route (``/v2.0/<tenant>/<environment>/api/v2.0/companies``) and the
Dataverse one (``/api/data/v9.2/accounts``) take only live tokens issued for
their own resource."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["BC_RESOURCE", "COMPANY", "Entra", "Issued"]

BC_RESOURCE = "https://api.businesscentral.dynamics.com"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
COMPANY = {"id": "5d115c9c-44e3-ea11-bb43-000d3a2feca1", "name": "CRONUS", "displayName": "CRONUS"}
ACCOUNT = {
    "accountid": "00000000-0000-0000-0000-00000000000a",
    "modifiedon": "2025-01-01T00:00:00Z",
    "name": "A",
}


@dataclass(frozen=True)
class Issued:
    token: str
    client_id: str
    resource: str
    how: str
    """``secret`` or ``certificate``."""


@dataclass
class Entra:
    tenant: str
    client_id: str
    dataverse_resource: str
    secret: str | None = None
    certificates: list[x509.Certificate] = field(default_factory=list)
    expires_in: int = 3599
    issued: list[Issued] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    refusals: list[dict[str, Any]] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    api_tokens: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/v2.0/{tenant}/{environment}/api/v2.0/companies", self.companies),
                Route("/api/data/v9.2/accounts", self.accounts),
            ]
        )

    # the token endpoint

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        self.requests.append(form)
        if request.path_params["tenant"] != self.tenant:
            return self._error(
                400,
                "invalid_request",
                90002,
                f"Tenant '{request.path_params['tenant']}' not found. Check to make sure you "
                "have the correct tenant ID and are signing into the correct cloud.",
            )
        if form.get("grant_type") != "client_credentials":
            return self._error(
                400, "unsupported_grant_type", 70003, "The grant type is not supported."
            )
        client_id = form.get("client_id", "")
        if client_id != self.client_id:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{self.tenant}'.",
            )
        scope = form.get("scope", "")
        resource = scope.removesuffix("/.default")
        if not scope.endswith("/.default") or resource not in (
            BC_RESOURCE,
            self.dataverse_resource,
        ):
            return self._error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier.",
            )
        if "client_secret" in form:
            if self.secret is None or form["client_secret"] != self.secret:
                return self._error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the "
                    "request is the client secret value, not the client secret ID, for a "
                    f"secret added to app '{self.client_id}'.",
                )
            how = "secret"
        elif form.get("client_assertion_type") == JWT_BEARER and "client_assertion" in form:
            refused = self._check_assertion(form["client_assertion"], str(request.url))
            if refused is not None:
                return refused
            how = "certificate"
        else:
            return self._error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' "
                "or 'client_secret'.",
            )
        value = f"token-{len(self.issued) + 1}"
        self.issued.append(Issued(value, client_id, resource, how))
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.expires_in,
                "ext_expires_in": self.expires_in,
                "access_token": value,
            }
        )

    def _check_assertion(self, assertion: str, audience: str) -> Response | None:
        try:
            header_part, claims_part, signature_part = assertion.split(".")
            header = json.loads(_unb64(header_part))
            claims = json.loads(_unb64(claims_part))
            signature = _unb64(signature_part)
        except ValueError:
            return self._error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        self.assertions.append({"header": header, "claims": claims})
        certificate = self._certificate_for(header)
        if certificate is None:
            return self._error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation. [Reason - The key was not found.]",
            )
        key = certificate.public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        signing_input = f"{header_part}.{claims_part}".encode()
        try:
            if header.get("alg") == "PS256":
                key.verify(
                    signature,
                    signing_input,
                    padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                    hashes.SHA256(),
                )
            elif header.get("alg") == "RS256":
                key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise InvalidSignature
        except InvalidSignature:
            return self._error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            )
        now = dt.datetime.now(dt.UTC)
        if certificate.not_valid_after_utc < now:
            return self._error(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is expired "
                f"on application. [Reason - The key used is expired., Thumbprint of key used "
                f"by client: '{certificate.fingerprint(hashes.SHA1()).hex().upper()}', Found "
                f"key 'Start={certificate.not_valid_before_utc:%m/%d/%Y %H:%M:%S}, "
                f"End={certificate.not_valid_after_utc:%m/%d/%Y %H:%M:%S}']",
            )
        stamp = now.timestamp()
        if (
            claims.get("aud") != audience
            or claims.get("iss") != self.client_id
            or claims.get("sub") != self.client_id
            or not claims.get("jti")
            or not claims.get("nbf", stamp + 1) <= stamp + 300
            or not stamp < claims.get("exp", 0)
        ):
            return self._error(
                401,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range or names another "
                "audience or client.",
            )
        return None

    def _certificate_for(self, header: dict[str, Any]) -> x509.Certificate | None:
        for cert in self.certificates:
            if header.get("x5t#S256") == _b64(cert.fingerprint(hashes.SHA256())):
                return cert
            if header.get("x5t") == _b64(cert.fingerprint(hashes.SHA1())):
                return cert
        return None

    def _error(self, status: int, error: str, code: int, text: str) -> JSONResponse:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        body = {
            "error": error,
            "error_description": (
                f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
            ),
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        }
        self.refusals.append(body)
        return JSONResponse(body, status_code=status)

    # the APIs

    def _bearer(self, request: Request, resource: str) -> Issued | None:
        value = request.headers.get("authorization", "").removeprefix("Bearer ")
        self.api_tokens.append(value)
        for issued in self.issued:
            if issued.token == value and issued.resource == resource:
                return None if value in self.revoked else issued
        return None

    async def companies(self, request: Request) -> Response:
        if self._bearer(request, BC_RESOURCE) is None:
            return JSONResponse(
                {"error": {"code": "Authentication_InvalidCredentials", "message": "no"}},
                status_code=401,
            )
        return JSONResponse({"value": [COMPANY]})

    async def accounts(self, request: Request) -> Response:
        if self._bearer(request, self.dataverse_resource) is None:
            return JSONResponse(
                {"error": {"code": "0x80072243", "message": "expired"}}, status_code=401
            )
        return JSONResponse({"value": [ACCOUNT]})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
