"""The admin server: HTTP API, dashboard and Prometheus metrics.

``AdminService(...).run(stop)`` serves it like any other service;
``create_app`` builds the ASGI app alone."""

from tablesync.admin.app import create_app
from tablesync.admin.routes import AdminContext
from tablesync.admin.service import AdminService

__all__ = ["AdminContext", "AdminService", "create_app"]
