-- The leases of the singletons (the coordinator, capture of each side): one
-- row per name, held by one process until it expires. Expiry is read on the
-- database's clock, so the holders' clocks never have to agree; a holder
-- that dies or is cut off frees it within its time to live, and a restart
-- of the database does not free it. The epoch grows each time the lease is
-- taken anew.
CREATE TABLE singleton_leases (
    name         text PRIMARY KEY,
    holder       text NOT NULL,
    holder_label text NOT NULL,
    epoch        bigint NOT NULL,
    taken_at     timestamptz NOT NULL,
    renewed_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
