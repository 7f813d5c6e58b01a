"""Benchmarks of tablesync on the local infrastructure and the API emulators.

``python -m bench`` runs them and writes ``bench/results/<name>.json``:

- ``fullsync``: a first full synchronization BC -> Dataverse through the real
  services, end to end and per stage, side by side with ``limit``;
- ``limit``: the same number of bare events through the same broker into a bare
  PostgreSQL bulk upsert, the ceiling of this machine;
- ``continuous``: change-to-visible latency and consumer lag under a steady load;
- ``memory``: peak RSS of one apply instance over tables of two sizes;
- ``profile``: where the time of a full synchronization goes, per process.

Every bench runs in its own databases (random names, dropped afterwards) and
under its own topic prefix (topics deleted afterwards)."""
