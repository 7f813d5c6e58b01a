"""The fault suite: the whole pipeline, several apply instances per mapping,
under a steady stream of changes on both sides while processes are killed,
apply instances leave, freeze and come back, the broker and PostgreSQL
restart, the APIs throttle, fail, go away and answer short, changes commit
late, and poison arrives; then both sides must agree.

``pytest tests/faults`` runs the short variant; ``TABLESYNC_FAULTS=full`` (what
``make test-faults`` sets) runs the long one. ``TABLESYNC_FAULT_SEED`` replays
a printed seed."""
