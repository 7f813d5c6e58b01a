"""The Dataverse emulator app: ``http://<host>:<port>/api/data/v9.2``."""

from __future__ import annotations

from starlette.types import ASGIApp

from tablesync.emulators.common.app import build_app
from tablesync.emulators.common.runtime import EmulatorConfig, Runtime, Tuning
from tablesync.emulators.dataverse.service import DataverseService
from tablesync.emulators.dataverse.specs import dataverse_specs

__all__ = ["create_app", "create_runtime"]


def create_runtime(config: EmulatorConfig) -> Runtime:
    tuning = Tuning(
        max_page_size=config.max_page_size,
        untracked=set(config.untracked),
        change_retention_s=config.change_retention_s,
    )
    service = DataverseService(tuning, dataverse_specs(config.custom), config.custom)
    return Runtime.create(config, service, tuning)


def create_app(config: EmulatorConfig) -> ASGIApp:
    return build_app(create_runtime(config))
