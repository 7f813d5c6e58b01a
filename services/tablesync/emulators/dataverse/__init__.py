"""The Dataverse Web API v9.2 emulator."""

from tablesync.emulators.dataverse.app import create_app

__all__ = ["create_app"]
