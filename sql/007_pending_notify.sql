-- Embedding workers (`memoryd embed --follow`) wait for new texts on the
-- channel `memoryd_pending` instead of polling fast.  A trigger rather than a
-- NOTIFY sent by memoryd's own sync, so that any writer (another machine's
-- daemon, an import script, psql) wakes them.  Statement-level: one
-- notification per statement, and PostgreSQL folds identical notifications
-- of one transaction into one, delivered at commit (never for a rollback).
-- Workers also poll (`[embedding] worker_poll_s`), so a lost notification
-- only delays texts, never leaves them pending.

CREATE FUNCTION memoryd_notify_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('memoryd_pending', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER messages_notify_pending
    AFTER INSERT OR UPDATE OF content, content_hash ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION memoryd_notify_pending();

CREATE TRIGGER summaries_notify_pending
    AFTER INSERT OR UPDATE OF content, content_hash ON summaries
    FOR EACH STATEMENT EXECUTE FUNCTION memoryd_notify_pending();
