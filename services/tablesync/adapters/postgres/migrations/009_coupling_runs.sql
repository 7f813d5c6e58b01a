-- BC's match-based coupling as a run of its own: its jobs couple uncoupled
-- records to their one match, create those without one only when asked
-- (create_unmatched), write the mapped values to what they couple only when
-- asked (sync_after), and count the records left without a match.
ALTER TABLE jobs ADD COLUMN create_unmatched boolean NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN sync_after boolean NOT NULL DEFAULT false;
ALTER TABLE job_partitions ADD COLUMN unmatched bigint NOT NULL DEFAULT 0;

ALTER TABLE runs DROP CONSTRAINT runs_kind_check;
ALTER TABLE runs ADD CONSTRAINT runs_kind_check CHECK (kind IN ('full', 'modified', 'coupling'));
-- A coupling run and a full synchronization never run at once either: both
-- decide every uncoupled record of their mappings.
DROP INDEX runs_one_full_sync;
CREATE UNIQUE INDEX runs_one_full_sync ON runs ((kind IN ('full', 'coupling')))
    WHERE kind IN ('full', 'coupling') AND status IN ('requested', 'running');

DROP VIEW job_totals;
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
       coalesce(sum(p.unmatched), 0)::bigint AS unmatched,
       count(p.finished_at)::integer         AS partitions_finished
FROM jobs j
LEFT JOIN job_partitions p ON p.job_id = j.job_id
GROUP BY j.job_id;
