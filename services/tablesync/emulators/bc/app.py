"""The BC emulator app: ``http://<host>:<port>/BC/api/v2.0`` and the custom API route."""

from __future__ import annotations

from starlette.types import ASGIApp

from tablesync.emulators.bc.service import COMPANY_NAME, BcService
from tablesync.emulators.bc.specs import bc_specs
from tablesync.emulators.common.app import build_app
from tablesync.emulators.common.runtime import EmulatorConfig, Runtime, Tuning

__all__ = ["create_app", "create_runtime"]


def create_runtime(config: EmulatorConfig) -> Runtime:
    tuning = Tuning(max_page_size=config.max_page_size)
    companies = config.bc_companies or (COMPANY_NAME,)
    service = BcService(tuning, bc_specs(config.custom), companies)
    return Runtime.create(config, service, tuning)


def create_app(config: EmulatorConfig) -> ASGIApp:
    return build_app(create_runtime(config))
