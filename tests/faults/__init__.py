"""The fault suite: the whole pipeline under a steady stream of changes on both
sides while processes are killed, the broker and PostgreSQL restart, the APIs
throttle, fail and go away, and poison arrives; then both sides must agree.

``pytest tests/faults`` runs the short variant; ``TABLESYNC_FAULTS=full`` (what
``make test-faults`` sets) runs the long one. ``TABLESYNC_FAULT_SEED`` replays
a printed seed."""
