"""Where the local infrastructure keeps its files."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from tablesync.errors import InfraError
from tablesync.settings import Settings

__all__ = ["cache_root", "kafka_files", "state_dir"]


def state_dir(settings: Settings) -> Path:
    """The absolute state directory; a relative setting is taken from the working directory."""
    return (Path.cwd() / settings.local.state_dir).absolute()


def kafka_files() -> Path:
    """The broker's pom and configuration templates, package data beside this module."""
    found = files("tablesync.localinfra") / "kafka_files"
    # Java and Maven are handed these as file names, so they must be real files.
    if not isinstance(found, Path) or not found.is_dir():
        raise InfraError(f"the local broker's files are not on the file system ({found})")
    return found


def cache_root() -> Path:
    """Downloads shared by every checkout and state directory of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tablesync"
