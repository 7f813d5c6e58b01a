"""Emulators of the Business Central API v2.0 and the Dataverse Web API v9.2.

Real HTTP servers (Starlette on uvicorn) that keep their rows in PostgreSQL and follow
Microsoft's public documentation closely enough that a client written from the docs
works on them unchanged. ``common`` holds what both share; ``bc`` and ``dataverse`` the
two apps; ``seed`` loads demo and synthetic data.
"""
