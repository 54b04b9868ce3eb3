-- The calendar day of each message, for --since/--until on message timestamps.
--
-- `ts` is kept as the transcript wrote it (text).  Its day is read from an
-- ISO 8601 prefix (YYYY-MM-DD, the date as written, whatever the offset) or
-- from a Unix epoch in seconds or milliseconds (UTC); anything else has no day,
-- and filters fall back to the conversation's date.  The function never
-- raises (Feb 30 rolls over into March rather than failing an insert), and is
-- immutable, so the column can be generated and indexed.

CREATE FUNCTION memoryd_ts_day(ts text) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN ts ~ '^[12][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])'
        THEN make_date(substr(ts, 1, 4)::int, substr(ts, 6, 2)::int, 1) + (substr(ts, 9, 2)::int - 1)
    WHEN ts ~ '^[0-9]{9,10}(\.[0-9]+)?$'
        THEN (timestamp '1970-01-01' + ts::float8 * interval '1 second')::date
    WHEN ts ~ '^[0-9]{12,13}$'
        THEN (timestamp '1970-01-01' + ts::float8 * interval '1 millisecond')::date
END;

ALTER TABLE messages ADD COLUMN day date GENERATED ALWAYS AS (memoryd_ts_day(ts)) STORED;
CREATE INDEX messages_day ON messages (day) WHERE day IS NOT NULL;
