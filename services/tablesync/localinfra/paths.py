"""Where the local infrastructure keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

from tablesync.errors import InfraError
from tablesync.settings import Settings

__all__ = ["cache_root", "infra_dir", "state_dir"]

# services/tablesync/localinfra/paths.py -> the repository root
_REPO_ROOT = Path(__file__).resolve().parents[3]


def state_dir(settings: Settings) -> Path:
    """The absolute state directory; a relative setting is taken from the working directory."""
    return (Path.cwd() / settings.local.state_dir).absolute()


def infra_dir(component: str) -> Path:
    """``infra/<component>`` of the source tree (the package is installed editable)."""
    for root in (_REPO_ROOT, Path.cwd()):
        candidate = root / "infra" / component
        if candidate.is_dir():
            return candidate
    raise InfraError(
        f"infra/{component} not found under {_REPO_ROOT} or {Path.cwd()}; "
        "run from a checkout of the tablesync repository"
    )


def cache_root() -> Path:
    """Downloads shared by every checkout and state directory of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tablesync"
