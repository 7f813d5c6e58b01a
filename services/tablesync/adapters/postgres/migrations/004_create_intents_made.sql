-- Whether the side answered that an announced create was made. Dataverse
-- takes the id tablesync gives, so an intent names its record before the
-- call: without this mark, a named record found missing could be one never
-- made (create it) or one made and deleted since by a user (a deletion of
-- the pair, decided by the mapping's deletion policy; never a re-creation).
ALTER TABLE create_intents ADD COLUMN made boolean NOT NULL DEFAULT false;
