"""``python -m tablesync.localinfra up|down|status|purge [--json]``."""

from __future__ import annotations

import sys

from tablesync.localinfra.command import main

sys.exit(main())
