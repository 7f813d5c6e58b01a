-- Who owns each partition of apply's topics: an apply instance takes a new
-- epoch for every partition it is assigned, and its writes and commits are
-- checked against it. One frozen past its session timeout (a zombie) whose
-- partitions went to another instance finds its epoch taken: its batch is
-- dropped instead of committed over the new owner's work.
CREATE TABLE apply_epochs (
    mapping    text    NOT NULL,
    topic      text    NOT NULL,
    partition  integer NOT NULL,
    epoch      bigint  NOT NULL,
    taken_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mapping, topic, partition)
);
