"""The Business Central API v2.0 emulator (and the ``tablesync/integration/v1.0`` custom
API page that serves ``salespeople``)."""

from tablesync.emulators.bc.app import create_app

__all__ = ["create_app"]
