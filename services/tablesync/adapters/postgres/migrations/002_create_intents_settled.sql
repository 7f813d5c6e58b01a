-- What each announced create sent. Business Central picks a new record's id,
-- so until the API answers only these values can tell that record apart: an
-- open intent then holds back just the uncoupled records that look like it
-- (not every record of the mapping), and a create interrupted by a crash is
-- found again by them, even when the source record has been deleted since.
-- Intents announced before this column existed match every record, as before.
ALTER TABLE create_intents ADD COLUMN payload jsonb NOT NULL DEFAULT '{}'::jsonb;

-- When the intent was last announced or looked at: one older than any write
-- call can take, whose source has no retry scheduled, was left by an attempt
-- that died, and apply settles it by reading its source again.
ALTER TABLE create_intents ADD COLUMN touched_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX create_intents_touched ON create_intents (mapping, touched_at);
