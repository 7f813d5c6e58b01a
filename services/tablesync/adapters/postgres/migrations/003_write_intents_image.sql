-- What each announced update leaves on its record, field by field of the
-- mapping (one image per attempt that announced it). After a crash between
-- the write and its commit, the record's next change read back is compared
-- with these: a field holding exactly what tablesync wrote is tablesync's
-- own value, never a user's change to sync back over a newer one.
ALTER TABLE write_intents ADD COLUMN images jsonb NOT NULL DEFAULT '[]'::jsonb;
