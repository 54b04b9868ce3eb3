-- Who said each message, and which recipe made each vector.
--
-- Speakers: transcripts that name who spoke (`{"role", "content",
-- "speaker"}` lines, OpenAI's `name`, an export's author name) keep the name
-- in `messages.speaker`.  A question asks by name ("What are Kate's
-- hobbies?"); the role says only user or assistant.  The name is indexed for
-- full-text search with the content, so the generated `tsv` column is rebuilt
-- (one rewrite of the table, as in 002) and its GIN index with it.  The name
-- has the lowest weight (D: 0.1 in ts_rank) and the content the highest (A:
-- 1.0): a name in the question then selects that person's turns and breaks
-- ties between them, but never outranks the words of the content.  Measured
-- on bench/retrieval.py (README "Retrieval quality"): with the name at the
-- content's weight, text-mode hit@10 fell from 0.561 to 0.510 (every turn of
-- the person asked about matched as well as the answer); weighted this way it
-- rose to 0.591.
--
-- Recipes: what is encoded for a text is no longer always its content (a
-- message with a speaker is embedded as "Name: content", memoryd/recipe.py).
-- `embeddings.recipe` names the recipe that made a vector: the vectors
-- already stored were made from the content alone ('content').  A text is
-- pending until it has vectors of the current recipe; until then search uses
-- the old ones, and writing the new ones deletes the old ones in the same
-- transaction.  `embeddings.input_hash` identifies exactly what was encoded
-- (NULL: the content itself, whose hash is `content_hash`), so a text whose
-- encoded input does not change with the recipe (no speaker, a summary)
-- reuses its vectors instead of being encoded again.  Both columns are added
-- without rewriting the table (a constant default, a NULL column).
--
-- `vector_cache` is keyed by that input hash: its rows so far hold vectors of
-- contents, whose input hash is the content hash, so only the name changes.
--
-- Stored conversations are read once more from their folders at the next
-- sync (their stored hashes no longer match), so that the speakers of
-- transcripts stored before this migration are filled in; unchanged messages
-- keep their ids and vectors.

ALTER TABLE messages ADD COLUMN speaker TEXT CHECK (speaker IS NULL OR speaker <> '');

ALTER TABLE messages DROP COLUMN tsv;
ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('memoryd_en'::regconfig, COALESCE(speaker, ''))
        || to_tsvector('memoryd_fr'::regconfig, COALESCE(speaker, '')), 'D')
    || setweight(to_tsvector('memoryd_en'::regconfig, left(content, 100000))
        || to_tsvector('memoryd_fr'::regconfig, left(content, 100000)), 'A')
) STORED;
CREATE INDEX messages_tsv ON messages USING gin (tsv);
-- Summaries' content gets the same weight, so text ranks of messages and
-- summaries stay comparable (ts_rank is linear in the weights: both are ten
-- times what they were, in the same order).
ALTER TABLE summaries DROP COLUMN tsv;
ALTER TABLE summaries ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('memoryd_en'::regconfig, left(content, 100000))
        || to_tsvector('memoryd_fr'::regconfig, left(content, 100000)), 'A')
) STORED;
CREATE INDEX summaries_tsv ON summaries USING gin (tsv);

ALTER TABLE embeddings ADD COLUMN recipe TEXT NOT NULL DEFAULT 'content';
ALTER TABLE embeddings ADD COLUMN input_hash TEXT;
-- Vectors are shared by input.  The input first: with the model first, the
-- planner took this index over embeddings_conversation for the exact search
-- of a slug filter.  (model, content_hash) from 003 stays: the planner's
-- exact plans for small tables and verify's lookups use it.
CREATE INDEX embeddings_input_hash ON embeddings ((COALESCE(input_hash, content_hash)), model);

ALTER TABLE vector_cache RENAME COLUMN content_hash TO input_hash;

CREATE OR REPLACE FUNCTION memoryd_keep_deleted_vectors() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Replace an input's cached chunks as a whole: chunks of two chunkings never mix.
    DELETE FROM vector_cache AS c
    USING (SELECT DISTINCT model, COALESCE(input_hash, content_hash) AS input_hash FROM deleted_embeddings) AS d
    WHERE c.model = d.model AND c.input_hash = d.input_hash;
    INSERT INTO vector_cache (model, input_hash, chunk, chunk_start, chunk_end, dim, vector)
    SELECT DISTINCT ON (model, COALESCE(input_hash, content_hash), chunk)
        model, COALESCE(input_hash, content_hash), chunk, chunk_start, chunk_end, dim, vector
    FROM deleted_embeddings
    ORDER BY model, COALESCE(input_hash, content_hash), chunk;
    RETURN NULL;
END;
$$;

-- Read every stored conversation again at the next sync (see above).
UPDATE conversations SET content_hash = 'before-006:' || content_hash;
UPDATE folder_state SET conversation_fingerprint = 'before-006:' || conversation_fingerprint
WHERE conversation_fingerprint IS NOT NULL;
