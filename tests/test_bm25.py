"""Text mode ranks by BM25: rare words weigh more, a named speaker counts, statistics exact or estimated agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memoryd import bm25
from memoryd import search as search_module
from memoryd.config import Config
from memoryd.db import Database
from memoryd.search import search, text_query
from memoryd.sync import Syncer
from tests.conftest import write_conversation

_CHATTER = [f"We had coffee again this morning, coffee number {n} of the week." for n in range(30)]
_RARE = "The Zanzibar ferry leaves at noon, so we booked the early taxi."
_REPEATS = "Coffee, coffee, coffee: the coffee there was good coffee."


def _write_spoken(root: Path, slug: str, lines: list[tuple[str, str, str]]) -> None:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "messages.jsonl").write_text(
        "".join(json.dumps({"role": r, "content": c, "speaker": s}) + "\n" for r, c, s in lines), encoding="utf-8"
    )


@pytest.fixture
def chatter(db: Database, config: Config) -> None:
    write_conversation(
        config.paths.conversations,
        "2025-04-01__coffee",
        [("user", text) for text in _CHATTER] + [("assistant", _RARE), ("user", _REPEATS)],
    )
    Syncer(db, config).reconcile()


@pytest.fixture
def fresh_stats() -> None:
    bm25._stats_cache.clear()


@pytest.mark.usefixtures("chatter", "fresh_stats")
def test_a_rare_word_outweighs_a_common_word_repeated(db: Database) -> None:
    """ts_rank put the message saying "coffee" five times first; BM25 weighs "Zanzibar" by its rarity."""
    hits = db.run(search, None, "zanzibar coffee", k=3, mode="text")
    assert [h.seq for h in hits[:2]] == [30, 31]
    assert hits[0].score > hits[1].score > hits[2].score > 0


@pytest.mark.usefixtures("fresh_stats")
def test_a_named_speaker_prefers_that_speakers_turns(db: Database, config: Config) -> None:
    """The same words said by two people: the one the question names comes first, by about two words' weight."""
    _write_spoken(
        config.paths.conversations,
        "2025-02-01__ski",
        [
            ("user", "I went skiing in the Alps last weekend.", "Elise"),
            ("assistant", "I went skiing in the Alps last weekend.", "Kate"),
            *[("user", f"Lunch was pasta, day {n}.", "Elise" if n % 2 else "Kate") for n in range(20)],
        ],
    )
    Syncer(db, config).reconcile()
    hits = db.run(search, None, "Where did Kate go skiing?", k=2, mode="text")
    assert [h.seq for h in hits] == [1, 0]  # seq 1 is Kate's
    elise = db.run(search, None, "Where did Elise go skiing?", k=2, mode="text")
    assert [h.seq for h in elise] == [0, 1]


def test_the_lexemes_of_one_word_share_a_number() -> None:
    """Both stemmings of a word at one position are one word; a lexeme two words share joins them."""
    numbers = bm25.word_numbers(
        [("ski", [1]), ("era", [2, 5]), ("lik", [3]), ("like", [3, 4]), ("skiing", [1]), ("era", [2, 5]), ("lik", [4])]
    )
    assert numbers["ski"] == numbers["skiing"]
    assert numbers["lik"] == numbers["like"]
    assert len({numbers["ski"], numbers["era"], numbers["like"]}) == 3


@pytest.mark.usefixtures("fresh_stats")
def test_a_word_stemmed_two_ways_counts_once(db: Database, config: Config) -> None:
    """ "skiing" is 'ski' in English and 'skiing' in French: the turn saying it scores its better lexeme, not both."""
    write_conversation(
        config.paths.conversations,
        "2025-02-01__alps",
        [("user", "We went skiing.")] + [("assistant", f"Ski rental, day {n}.") for n in range(6)],
    )
    Syncer(db, config).reconcile()
    hits = db.run(search, None, "skiing", k=1, mode="text")
    assert hits[0].seq == 0
    with db.connection() as conn:
        words = text_query(conn, "skiing")
        (length,) = conn.execute("SELECT length(tsv) FROM messages WHERE seq = 0").fetchone() or (0,)
    assert words.lexemes == ("ski", "skiing") and words.weights["words"][0] == words.weights["words"][1]
    norm = bm25.K1 * (1 - bm25.B + bm25.B * length / words.weights["mean_messages"])
    per_lexeme = [idf * (bm25.K1 + 1) / (1 + norm) for idf in words.weights["idf_messages"]]  # each once in the turn
    assert per_lexeme[1] > per_lexeme[0]  # 'skiing' is the rarer
    assert hits[0].score == pytest.approx(max(per_lexeme))


@pytest.mark.usefixtures("chatter", "fresh_stats")
def test_document_frequencies_are_counted_exactly_in_a_small_table(db: Database) -> None:
    with db.connection() as conn:
        stats = bm25.table_stats(conn)
        assert stats["messages"].exact and stats["messages"].rows == 32
        assert stats["summaries"].rows == 0
        lexemes = ["coffe", "zanzibar", "absent"]
        frequencies = bm25.document_frequencies(conn, stats, ["messages"], lexemes)
    assert frequencies == {"messages": [31.0, 1.0, 0.0]}


@pytest.mark.usefixtures("chatter", "fresh_stats")
def test_estimated_statistics_of_a_large_table_rank_alike(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past EXACT_STATS_ROWS: the planner's row count, a sample's mean length, pg_stats' common lexemes, kept."""
    exact = db.run(search, None, "zanzibar coffee", k=5, mode="text")
    with db.connection() as conn:
        conn.execute("ANALYZE messages")
    monkeypatch.setattr(bm25, "EXACT_STATS_ROWS", 10)
    bm25._stats_cache.clear()
    with db.connection() as conn:
        stats = bm25.table_stats(conn)
        assert not stats["messages"].exact and stats["messages"].rows == 32
        assert stats["messages"].estimated_rows["coffe"] == pytest.approx(31, abs=1)
        assert "None" not in stats["messages"].estimated_rows  # pg_stats' three trailing frequencies are no lexemes
        assert bm25.table_stats(conn)["messages"] is stats["messages"]  # kept STATS_TTL_S
        del stats["messages"].estimated_rows["zanzibar"]  # as in a large table, where it is too rare to be listed
        assert bm25.document_frequencies(conn, stats, ["messages"], ["zanzibar", "coffe"]) == {"messages": [1.0, 31.0]}
    estimated = db.run(search, None, "zanzibar coffee", k=5, mode="text")
    assert [h.seq for h in estimated] == [h.seq for h in exact]
    assert [h.score for h in estimated] == pytest.approx([h.score for h in exact], rel=0.05)


@pytest.mark.usefixtures("chatter", "fresh_stats")
def test_candidates_are_the_rows_of_the_rarest_words(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Words are taken rarest first while their rows add up to TEXT_SCAN_LIMIT; the others only rank."""
    with db.connection() as conn:
        assert text_query(conn, "zanzibar coffee").selective == ("coffe", "zanzibar")
        monkeypatch.setattr(search_module, "TEXT_SCAN_LIMIT", 10)  # "coffee" is in 31 rows
        words = text_query(conn, "zanzibar coffee")
        assert words.selective == ("zanzibar",) and words.lexemes == ("coffe", "zanzibar")
        assert text_query(conn, "coffee morning").selective == ()  # common words only
    assert [h.seq for h in db.run(search, None, "zanzibar coffee", k=5, mode="text")] == [30]
    common = db.run(search, None, "coffee morning", k=40, mode="text")  # all the words in every row, 10 rows ranked
    assert len(common) == 10 and all("morning" in h.snippet for h in common)
