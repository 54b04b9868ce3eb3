-- memoryd schema, version 2: full-text search over messages and summaries.
--
-- Text search complements search by meaning: it finds the exact rare word
-- (a product code, a surname, an error message) that an embedding blurs.
-- Conversations mix French and English, often within one message, so no
-- single stemmer fits.  Each text is indexed twice, once stemmed as English
-- and once as French, into one tsvector: a query word matches when either
-- stemmer reduces it and the text's word to the same stem (English
-- "migrations"/"migrate", French "résumés"/"résumé"), and a stem that is
-- wrong for the language (French rules on an English word) is harmless
-- because queries are reduced the same way.  Both configurations:
--   * drop English and French stop words first (checked on the word as
--     written, so "à" and "été" go too), so neither language's function
--     words pollute the other's stems;
--   * fold accents with unaccent before stemming, so "resume" finds
--     "résumé" and a query typed without accents still matches;
--   * keep numbers, codes (gpt4), e-mails, URLs and file names unstemmed
--     but lower-cased and unaccented, from the `simple` configuration.
-- Against `simple` + unaccent (no stemming), measured with the tests in
-- tests/test_search.py: plural and verb forms in both languages
-- ("migrations"/"migration", "validés"/"validé", "ferments"/"ferment") match
-- only with stemming.  The cost: a tsvector about 1.5 times that of one
-- stemmed configuration, and about the size of `simple`'s, which keeps the
-- stop words (bench/generate.py text).

CREATE EXTENSION IF NOT EXISTS unaccent;

CREATE TEXT SEARCH DICTIONARY memoryd_stop_en (TEMPLATE = pg_catalog.simple, STOPWORDS = english, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY memoryd_stop_fr (TEMPLATE = pg_catalog.simple, STOPWORDS = french, ACCEPT = false);
CREATE TEXT SEARCH DICTIONARY memoryd_stem_en (TEMPLATE = pg_catalog.snowball, LANGUAGE = english);
CREATE TEXT SEARCH DICTIONARY memoryd_stem_fr (TEMPLATE = pg_catalog.snowball, LANGUAGE = french);

CREATE TEXT SEARCH CONFIGURATION memoryd_en (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION memoryd_en
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH memoryd_stop_en, memoryd_stop_fr, unaccent, memoryd_stem_en;
ALTER TEXT SEARCH CONFIGURATION memoryd_en
    ALTER MAPPING FOR numword, numhword, hword_numpart WITH unaccent, simple;

CREATE TEXT SEARCH CONFIGURATION memoryd_fr (COPY = memoryd_en);
ALTER TEXT SEARCH CONFIGURATION memoryd_fr
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
    WITH memoryd_stop_en, memoryd_stop_fr, unaccent, memoryd_stem_fr;

-- The indexed text is capped: a tsvector holds at most 1 MB and a message
-- can be 50 MB, and a message must never fail to store because of its index.
-- The worst inputs measured (distinct one-character words of 4-byte
-- characters; distinct short words, hyphenated words, e-mails, URLs, numbers,
-- each stemmed two ways) take under 4 bytes of tsvector per character, so
-- 100,000 characters stay under 400 kB, well within the limit.  Beyond that,
-- positions are no longer distinct anyway (they stop at 16,383), and the
-- rest of a long text is still found by meaning, chunk by chunk.  Words over
-- 2,047 characters are skipped by PostgreSQL with a notice, never an error.
-- Adding the columns rewrites both tables once, indexing the rows already
-- there.
ALTER TABLE messages ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    to_tsvector('memoryd_en'::regconfig, left(content, 100000))
    || to_tsvector('memoryd_fr'::regconfig, left(content, 100000))
) STORED;
ALTER TABLE summaries ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
    to_tsvector('memoryd_en'::regconfig, left(content, 100000))
    || to_tsvector('memoryd_fr'::regconfig, left(content, 100000))
) STORED;
CREATE INDEX messages_tsv ON messages USING gin (tsv);
CREATE INDEX summaries_tsv ON summaries USING gin (tsv);
