"""The ``tablesync`` command: one Typer sub-app per noun."""
