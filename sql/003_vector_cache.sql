-- Vectors outlive the rows they were made from, for a while, so the same text
-- is never encoded twice: a slug renamed on disk (a delete then a create), a
-- message edited back, a conversation re-imported.  Live vectors are found
-- in `embeddings` itself by (model, content_hash); this table keeps the
-- vectors of deleted embeddings, filled by a trigger so that no delete path
-- (cascades included) can forget it, and pruned by age.

CREATE INDEX embeddings_model_content_hash ON embeddings (model, content_hash);

CREATE TABLE vector_cache (
    model        TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    chunk        INT NOT NULL,
    chunk_start  INT NOT NULL,
    chunk_end    INT NOT NULL,
    dim          INT NOT NULL,
    vector       vector NOT NULL,
    cached_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (model, content_hash, chunk)
);
CREATE INDEX vector_cache_cached_at ON vector_cache (cached_at);

CREATE FUNCTION memoryd_keep_deleted_vectors() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Replace a text's cached chunks as a whole: chunks of two chunkings never mix.
    DELETE FROM vector_cache AS c
    USING (SELECT DISTINCT model, content_hash FROM deleted_embeddings) AS d
    WHERE c.model = d.model AND c.content_hash = d.content_hash;
    INSERT INTO vector_cache (model, content_hash, chunk, chunk_start, chunk_end, dim, vector)
    SELECT DISTINCT ON (model, content_hash, chunk) model, content_hash, chunk, chunk_start, chunk_end, dim, vector
    FROM deleted_embeddings
    ORDER BY model, content_hash, chunk;
    RETURN NULL;
END;
$$;

CREATE TRIGGER embeddings_keep_deleted_vectors
    AFTER DELETE ON embeddings
    REFERENCING OLD TABLE AS deleted_embeddings
    FOR EACH STATEMENT EXECUTE FUNCTION memoryd_keep_deleted_vectors();
