-- memoryd schema, version 1.
-- The seed's four tables (conversations, messages, summaries, embeddings),
-- extended with content hashes for idempotent upserts, the state of the
-- folders at the last sync (reconcile compares against it) and recorded
-- ingest errors.  Applied once, in one transaction with its
-- schema_migrations row.

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE conversations (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          TEXT NOT NULL UNIQUE,          -- e.g. 2025-06-25__orage_codé_textuel
    title         TEXT NOT NULL,
    created_date  DATE,
    tags          TEXT[] NOT NULL DEFAULT '{}',
    total_chars   BIGINT NOT NULL,
    total_lines   BIGINT NOT NULL,
    source_path   TEXT NOT NULL,
    source_format TEXT NOT NULL,
    content_hash  TEXT NOT NULL,                 -- transcript + meta.json bytes
    ingested_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX conversations_created_date ON conversations (created_date);

CREATE TABLE messages (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INT NOT NULL CHECK (seq >= 0),
    role            TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    ts              TEXT,
    content         TEXT NOT NULL,
    content_hash    TEXT NOT NULL,
    -- Deferred so that a message moved by an insertion earlier in the
    -- transcript can change its seq in place, keeping its id and embeddings.
    CONSTRAINT messages_conversation_seq UNIQUE (conversation_id, seq) DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE summaries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    level           INT NOT NULL CHECK (level >= 1),
    key             TEXT NOT NULL,
    covers          JSONB NOT NULL DEFAULT '[]',   -- seq numbers of the covered messages
    content         TEXT NOT NULL,
    char_count      INT NOT NULL,
    topics          TEXT[] NOT NULL DEFAULT '{}',
    content_hash    TEXT NOT NULL,
    source_path     TEXT NOT NULL,
    UNIQUE (conversation_id, level, key)
);

-- One row per chunk of a message or summary, per model.  The reference is
-- held by two real foreign keys (exactly one set) so that PostgreSQL itself
-- guarantees no embedding outlives what it was made from; ref_type/ref_id
-- keep the seed's polymorphic view.  `vector` has no fixed dimension so that
-- several models can live side by side; each model gets its own partial
-- expression HNSW index, created when its first vectors are written.
CREATE TABLE embeddings (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    ref_type        TEXT NOT NULL CHECK (ref_type IN ('message', 'summary')),
    message_id      BIGINT REFERENCES messages (id) ON DELETE CASCADE,
    summary_id      BIGINT REFERENCES summaries (id) ON DELETE CASCADE,
    ref_id          BIGINT GENERATED ALWAYS AS (COALESCE(message_id, summary_id)) STORED,
    chunk           INT NOT NULL CHECK (chunk >= 0),
    chunk_start     INT NOT NULL,               -- character offsets of the chunk in the content
    chunk_end       INT NOT NULL,
    model           TEXT NOT NULL,
    dim             INT NOT NULL,
    vector          vector NOT NULL,
    content_hash    TEXT NOT NULL,              -- hash of the whole content the chunk came from
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((ref_type = 'message') = (message_id IS NOT NULL)
       AND (ref_type = 'summary') = (summary_id IS NOT NULL)),
    CHECK (vector_dims(vector) = dim),
    UNIQUE (ref_type, ref_id, model, chunk)
);
CREATE INDEX embeddings_message ON embeddings (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX embeddings_summary ON embeddings (summary_id) WHERE summary_id IS NOT NULL;
CREATE INDEX embeddings_conversation ON embeddings (conversation_id);

-- What the folders of a slug looked like at its last sync: a fingerprint of
-- (relative path, size, mtime) of every file.  Reconcile compares a directory
-- walk against this instead of re-parsing.  NULL: the folder did not exist.
CREATE TABLE folder_state (
    slug                     TEXT PRIMARY KEY,
    conversation_fingerprint TEXT,
    summaries_fingerprint    TEXT,
    synced_at                TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Input that could not be used.  One row per file; a file that parses again
-- clears its row.
CREATE TABLE ingest_errors (
    path       TEXT PRIMARY KEY,
    slug       TEXT NOT NULL,
    severity   TEXT NOT NULL DEFAULT 'error' CHECK (severity IN ('error', 'warning')),
    error      TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    count      INT NOT NULL DEFAULT 1
);
CREATE INDEX ingest_errors_slug ON ingest_errors (slug);
