-- Capture's checkpoint of a Dataverse table with change tracking is the delta
-- link it follows next; the watermark stays beside it, where polling by stamp
-- resumes when the link expires. A row may hold a link before any watermark.
ALTER TABLE capture_checkpoints ADD COLUMN delta_link text;
ALTER TABLE capture_checkpoints ALTER COLUMN watermark DROP NOT NULL;
