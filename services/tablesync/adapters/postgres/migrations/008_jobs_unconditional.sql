-- A job of an unconditional full synchronization compares every coupled
-- record with its counterpart, not only the ones changed since the last
-- sync: apply reads it from the job of each snapshot event.
ALTER TABLE jobs ADD COLUMN unconditional boolean NOT NULL DEFAULT false;
