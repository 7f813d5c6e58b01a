-- Several BC companies against one Dataverse environment: each coupling, job
-- and run says which BC company it is of. '' is the one company of a
-- deployment that names no list of companies, so rows made before keep their
-- meaning. BC ids are GUIDs and Dataverse ids unique in the environment, so
-- the keys stay as they are; a BC number (bc_key) is unique in a company only.
ALTER TABLE couplings ADD COLUMN company text NOT NULL DEFAULT '';
DROP INDEX couplings_bc_key;
CREATE INDEX couplings_bc_key ON couplings (mapping, company, bc_key);

ALTER TABLE jobs ADD COLUMN company text NOT NULL DEFAULT '';
DROP INDEX jobs_continuous_interval;
CREATE UNIQUE INDEX jobs_continuous_interval ON jobs (mapping, company, direction, interval_start)
    WHERE kind = 'continuous';

-- NULL: every company the deployment syncs.
ALTER TABLE runs ADD COLUMN company text;

-- j.* was expanded when the view was made: made again, it shows the company.
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
