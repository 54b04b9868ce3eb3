-- memoryd schema, version 5: sources.  Several machines share one database.
--
-- Every conversation belongs to a source (`[source] name`, the host name by
-- default): the machine whose folders it came from.  Slugs are unique per
-- source, not globally, and so are the rows that describe a source's
-- folders (folder_state) and the problems found in them (ingest_errors):
-- a daemon, `ingest` and `reconcile` read, lock and delete only their own
-- source's rows.
--
-- Rows stored before this migration belong to the source of the memoryd
-- process that applies it: the migration runner (memoryd.db.apply_migrations)
-- sets `memoryd.source` for the migration's transaction, and this file reads
-- it.  The migration runs once, in one transaction, under the migrations'
-- advisory lock, so exactly one source claims them, and nothing else can
-- store a row in between (README, "Several machines").  Applied by hand
-- without that setting, the UPDATE fails rather than guess.
--
-- `source` has no default: a writer that forgets it is an error, not a row
-- silently given to some other machine.

ALTER TABLE conversations ADD COLUMN source TEXT;
UPDATE conversations SET source = current_setting('memoryd.source');
ALTER TABLE conversations ALTER COLUMN source SET NOT NULL;
ALTER TABLE conversations ADD CONSTRAINT conversations_source_check CHECK (source <> '');
ALTER TABLE conversations DROP CONSTRAINT conversations_slug_key;
ALTER TABLE conversations ADD CONSTRAINT conversations_source_slug_key UNIQUE (source, slug);
-- A slug without its source (search --slug, Memory.conversation(slug)) is still looked up by index.
CREATE INDEX conversations_slug ON conversations (slug);

ALTER TABLE folder_state ADD COLUMN source TEXT;
UPDATE folder_state SET source = current_setting('memoryd.source');
ALTER TABLE folder_state ALTER COLUMN source SET NOT NULL;
ALTER TABLE folder_state DROP CONSTRAINT folder_state_pkey;
ALTER TABLE folder_state ADD PRIMARY KEY (source, slug);

-- Paths are per machine: two machines may well have the same one.
ALTER TABLE ingest_errors ADD COLUMN source TEXT;
UPDATE ingest_errors SET source = current_setting('memoryd.source');
ALTER TABLE ingest_errors ALTER COLUMN source SET NOT NULL;
ALTER TABLE ingest_errors DROP CONSTRAINT ingest_errors_pkey;
ALTER TABLE ingest_errors ADD PRIMARY KEY (source, path);
DROP INDEX ingest_errors_slug;
CREATE INDEX ingest_errors_source_slug ON ingest_errors (source, slug);
