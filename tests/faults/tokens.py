"""A tiny OAuth 2.0 token endpoint (client credentials), so the Dataverse side
runs with a client secret as it does against Entra ID: the secret goes in,
an access token the emulator accepts comes out."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = ["token_app"]


def token_app(client_id: str, client_secret: str, access_token: str) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        # A form body, read by hand: starlette's form parser needs an extra package.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        secret = form.get("client_secret", "")
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != client_id
            or not hmac.compare_digest(secret.encode(), client_secret.encode())
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        return JSONResponse(
            {"access_token": access_token, "token_type": "Bearer", "expires_in": 3600}
        )

    return Starlette(routes=[Route("/oauth2/v2.0/token", token, methods=["POST"])])
