-- tablesync's own state: mappings, couplings, runs, jobs and their errors,
-- per-record retry status, and the positions of capture and apply.

CREATE TABLE mappings (
    name                     text PRIMARY KEY,
    position                 integer NOT NULL,
    definition               jsonb NOT NULL,
    direction                text NOT NULL
        CHECK (direction IN ('to_integration', 'from_integration', 'bidirectional')),
    sync_only_coupled        boolean NOT NULL,
    table_filter             text,
    integration_table_filter text,
    loaded_at                timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- One BC record and one Dataverse row of a mapping, with the state of both
-- at the last sync: the echo guard and the conflict detector read these.
CREATE TABLE couplings (
    mapping         text NOT NULL,
    bc_id           uuid NOT NULL,
    dv_id           uuid NOT NULL,
    bc_key          text,
    bc_modified_at  timestamptz,
    bc_etag         text,
    dv_modified_at  timestamptz,
    dv_etag         text,
    coupled_at      timestamptz NOT NULL DEFAULT now(),
    last_synced_at  timestamptz NOT NULL DEFAULT now(),
    last_direction  text,
    bc_deleted      boolean NOT NULL DEFAULT false,
    dv_deleted      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (mapping, bc_id),
    UNIQUE (mapping, dv_id)
);
CREATE INDEX couplings_bc_key ON couplings (mapping, bc_key);

CREATE TABLE runs (
    run_id        uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('full', 'modified')),
    status        text NOT NULL
        CHECK (status IN ('requested', 'running', 'finished', 'failed', 'cancelled')),
    mappings      text[] NOT NULL DEFAULT '{}',
    options       jsonb NOT NULL DEFAULT '{}',
    requested_by  text NOT NULL DEFAULT '',
    requested_at  timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    message       text NOT NULL DEFAULT ''
);
-- The database itself refuses a second full synchronization while one runs.
CREATE UNIQUE INDEX runs_one_full_sync ON runs ((kind))
    WHERE kind = 'full' AND status IN ('requested', 'running');

CREATE TABLE jobs (
    job_id              uuid PRIMARY KEY,
    run_id              uuid REFERENCES runs (run_id),
    mapping             text NOT NULL,
    direction           text NOT NULL CHECK (direction IN ('to_integration', 'from_integration')),
    kind                text NOT NULL,
    type                text NOT NULL DEFAULT 'synchronization'
        CHECK (type IN ('synchronization', 'coupling', 'uncoupling')),
    status              text NOT NULL DEFAULT 'running'
        CHECK (status IN ('pending', 'running', 'finished', 'failed')),
    ignore_only_coupled boolean NOT NULL DEFAULT false,
    source_topic        text,
    partitions          integer,
    interval_start      timestamptz,
    snapshot_requested  boolean NOT NULL DEFAULT false,
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    message             text NOT NULL DEFAULT ''
);
CREATE INDEX jobs_started ON jobs (started_at DESC);
CREATE INDEX jobs_run ON jobs (run_id);
CREATE UNIQUE INDEX jobs_continuous_interval ON jobs (mapping, direction, interval_start)
    WHERE kind = 'continuous';

-- Counters of a job per source partition: apply instances add to their own
-- rows in the same transaction as their position, so counts stay exact
-- across crashes and replays; finished marks the partition's end marker.
CREATE TABLE job_partitions (
    job_id      uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    inserted    bigint NOT NULL DEFAULT 0,
    modified    bigint NOT NULL DEFAULT 0,
    deleted     bigint NOT NULL DEFAULT 0,
    unchanged   bigint NOT NULL DEFAULT 0,
    skipped     bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    pending     bigint NOT NULL DEFAULT 0,
    coupled     bigint NOT NULL DEFAULT 0,
    uncoupled   bigint NOT NULL DEFAULT 0,
    finished_at timestamptz,
    PRIMARY KEY (job_id, topic, partition)
);

-- A job with its counters summed over its partitions: what every listing reads.
CREATE VIEW job_totals AS
SELECT j.*,
       coalesce(sum(p.inserted), 0)::bigint  AS inserted,
       coalesce(sum(p.modified), 0)::bigint  AS modified,
       coalesce(sum(p.deleted), 0)::bigint   AS deleted,
       coalesce(sum(p.unchanged), 0)::bigint AS unchanged,
       coalesce(sum(p.skipped), 0)::bigint   AS skipped,
       coalesce(sum(p.failed), 0)::bigint    AS failed,
       coalesce(sum(p.pending), 0)::bigint   AS pending,
       coalesce(sum(p.coupled), 0)::bigint   AS coupled,
       coalesce(sum(p.uncoupled), 0)::bigint AS uncoupled,
       count(p.finished_at)::integer         AS partitions_finished
FROM jobs j
LEFT JOIN job_partitions p ON p.job_id = j.job_id
GROUP BY j.job_id;

CREATE TABLE job_errors (
    id              bigserial PRIMARY KEY,
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    mapping         text NOT NULL,
    direction       text NOT NULL,
    source_side     text NOT NULL,
    source_id       text NOT NULL,
    destination_id  text,
    message         text NOT NULL,
    detail          text NOT NULL DEFAULT '',
    occurred_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_errors_job ON job_errors (job_id);

-- Records that did not sync: pending on a lookup, failed and retried with
-- backoff, or skipped after repeating the same failure. The latest event of
-- the record is kept so a retry needs nothing else.
CREATE TABLE record_status (
    mapping          text NOT NULL,
    source_side      text NOT NULL CHECK (source_side IN ('bc', 'dataverse')),
    source_id        text NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'failed', 'skipped')),
    reason           text NOT NULL,
    message          text NOT NULL,
    destination_id   text,
    attempts         integer NOT NULL DEFAULT 1,
    same_failures    integer NOT NULL DEFAULT 1,
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz,
    last_job_id      uuid,
    -- Mappings whose new couplings may resolve a pending lookup: a coupling
    -- made there wakes the record up before its backoff ends.
    waiting_for      text[] NOT NULL DEFAULT '{}',
    event            bytea NOT NULL,
    PRIMARY KEY (mapping, source_side, source_id)
);
CREATE INDEX record_status_due ON record_status (mapping, next_attempt_at)
    WHERE status <> 'skipped';

-- A create is announced here before the destination API is called, so a
-- crash between the create and its coupling is recognised on replay, and the
-- new record is not mistaken for an uncoupled one by the other direction.
CREATE TABLE create_intents (
    mapping       text NOT NULL,
    source_side   text NOT NULL,
    source_id     text NOT NULL,
    dest_id       text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mapping, source_side, source_id)
);
CREATE INDEX create_intents_dest ON create_intents (mapping, dest_id);

-- Records whose deletion apply has seen (ids are never reused): a late or
-- replayed version of one is never created again on the other side.
CREATE TABLE deleted_records (
    mapping     text NOT NULL,
    side        text NOT NULL,
    record_id   text NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mapping, side, record_id)
);

-- An update or deletion announced before the destination is called. After
-- a crash between the call and the commit, a record found already holding
-- the values (or already gone) was written by tablesync itself: its version
-- is recorded (or its deletion counted) instead of being taken for a user's.
CREATE TABLE write_intents (
    mapping     text NOT NULL,
    side        text NOT NULL,
    record_id   text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('update', 'delete')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mapping, side, record_id, kind)
);

CREATE TABLE apply_positions (
    mapping      text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mapping, topic, partition)
);

-- Snapshots a capture has published, so a replayed request is not published twice.
CREATE TABLE snapshots (
    job_id       uuid PRIMARY KEY,
    side         text NOT NULL,
    table_name   text NOT NULL,
    records      bigint NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE capture_checkpoints (
    side         text NOT NULL,
    table_name   text NOT NULL,
    watermark    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (side, table_name)
);

-- When each mapping and direction last synchronized: the lower bound of the
-- next "synchronize modified records".
CREATE TABLE sync_watermarks (
    mapping      text NOT NULL,
    direction    text NOT NULL,
    synced_until timestamptz NOT NULL,
    PRIMARY KEY (mapping, direction)
);
