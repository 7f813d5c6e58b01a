-- The record log: one row per decision apply counted, in the job it counted
-- in, written in the transaction of the batch that counted it. It says what
-- was decided (the job counters' names), which way it wrote and the names of
-- the fields written, never their values. Rows go with their job when the
-- job is pruned.
CREATE TABLE record_log (
    id              bigserial PRIMARY KEY,
    mapping         text NOT NULL,
    company         text NOT NULL DEFAULT '',
    source_side     text NOT NULL CHECK (source_side IN ('bc', 'dataverse')),
    source_id       text NOT NULL,
    counterpart_id  text,
    job_id          uuid NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    decision        text[] NOT NULL CHECK (
        cardinality(decision) > 0
        AND decision <@ ARRAY['inserted', 'modified', 'deleted', 'unchanged', 'skipped',
                              'failed', 'pending', 'coupled', 'uncoupled', 'unmatched']),
    direction       text CHECK (direction IN ('to_integration', 'from_integration')),
    fields          text[] NOT NULL DEFAULT '{}',
    message         text NOT NULL DEFAULT '',
    logged_at       timestamptz NOT NULL
);
-- A record's history is asked for by either of its ids: its own decisions,
-- and those of its counterpart that name it. The ids alone as keys: a GUID
-- names one record, the rows of one record are few to sort, and every index
-- is paid for by each batch's insert.
CREATE INDEX record_log_source ON record_log (source_id);
CREATE INDEX record_log_counterpart ON record_log (counterpart_id)
    WHERE counterpart_id IS NOT NULL;
-- Pruned with its job.
CREATE INDEX record_log_job ON record_log (job_id);
