"""``python -m tablesync.cli``: the same as the ``tablesync`` command."""

from tablesync.cli.main import main

main()
