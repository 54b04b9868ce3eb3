"""Search by meaning (the real model, through the HNSW index), by words (full text), and both fused."""

from __future__ import annotations

import random
from datetime import date

import numpy as np
import psycopg
import pytest

from memoryd import search as search_module
from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import Embedder, embed_pending
from memoryd.search import (
    FUSION_WEIGHTS,
    MODES,
    Candidate,
    Mode,
    SearchFilters,
    SearchHit,
    SearchQuery,
    explain,
    explain_query,
    fuse,
    normalized,
    search,
    search_query,
)
from memoryd.store import ChunkVector, claim_pending, write_embeddings
from memoryd.sync import Syncer
from memoryd.vectors import ensure_vector_index, hnsw_index_name
from tests.conftest import write_conversation, write_summaries

pytestmark = pytest.mark.slow

_FILLER = [
    "The quarterly budget review covered office supplies, travel expenses and software licences.",
    "We refactored the login form so that validation errors appear next to each field.",
    "The recipe calls for two cups of flour, a pinch of salt and a tablespoon of olive oil.",
    "Traffic on the ring road was slow this morning because of roadworks near the bridge.",
    "The football match ended in a draw after a late penalty in the second half.",
    "Remember to water the tomato plants on the balcony every evening during the heatwave.",
]
_TERNS = (
    "Finally, the Arctic tern holds the record for the longest migration of any animal: each year it flies"
    " from its breeding grounds in Greenland and the Arctic to the Weddell Sea in Antarctica and back,"
    " about seventy thousand kilometres."
)


def _long_message() -> str:
    rng = random.Random(7)
    paragraphs: list[str] = []
    while sum(len(p) + 2 for p in paragraphs) < 20_000 - len(_TERNS):
        paragraphs.append(" ".join(rng.choice(_FILLER) for _ in range(4)))
    return "\n\n".join([*paragraphs, _TERNS])


@pytest.fixture
def corpus(db: Database, config: Config, embedder: Embedder) -> None:
    write_conversation(
        config.paths.conversations,
        "2025-03-01__birds",
        [("user", "Tell me everything you know, in one long answer."), ("assistant", _long_message())],
        title="Long answer",
    )
    write_conversation(
        config.paths.conversations,
        "2025-05-10__firewall",
        [
            ("user", "How do I open port 443 on my server's firewall?"),
            ("assistant", "With ufw: sudo ufw allow 443/tcp, then sudo ufw reload to apply the rule."),
        ],
    )
    write_conversation(
        config.paths.conversations,
        "2025-08-20__bread",
        [
            ("user", "Why did my bread not rise?"),
            ("assistant", "Your yeast may have been dead, or the dough too cold to ferment."),
        ],
    )
    write_summaries(
        config.paths.summaries,
        "2025-05-10__firewall",
        [
            {"level": 1, "covers": [0, 1], "content": "Opening HTTPS port 443 with ufw."},
            {"level": 2, "covers": [0, 1], "content": "Server network security configuration."},
        ],
    )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)


@pytest.mark.usefixtures("corpus")
def test_long_message_found_by_its_last_paragraph(db: Database, embedder: Embedder) -> None:
    """A 20,000-character message is found by a query about its last paragraph only."""
    hits = db.run(search, embedder, "how far do arctic terns migrate every year", k=3)
    assert hits[0].slug == "2025-03-01__birds"
    assert hits[0].kind == "message" and hits[0].seq == 1 and hits[0].role == "assistant"
    assert "tern" in hits[0].snippet


@pytest.mark.usefixtures("corpus")
def test_results_carry_context_and_are_ordered(db: Database, embedder: Embedder) -> None:
    """Hits are sorted by score and carry slug, title, date, role and a snippet, one per message."""
    hits = db.run(search, embedder, "open a port in the firewall", k=5)
    assert hits[0].slug == "2025-05-10__firewall"
    assert hits[0].created_date is not None and hits[0].created_date.isoformat() == "2025-05-10"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len({(h.kind, h.ref_id) for h in hits}) == len(hits)


@pytest.mark.usefixtures("corpus")
def test_filters(db: Database, embedder: Embedder) -> None:
    """--role, --level, --slug, --since/--until and --kind restrict results and still fill k."""
    by_role = db.run(search, embedder, "firewall", k=3, filters=SearchFilters(roles=("user",)))
    assert len(by_role) == 3 and {h.role for h in by_role} == {"user"}
    by_level = db.run(search, embedder, "firewall", k=5, filters=SearchFilters(levels=(2,)))
    assert [(h.kind, h.level) for h in by_level] == [("summary", 2)]
    by_slug = db.run(search, embedder, "firewall", k=5, filters=SearchFilters(slugs=("2025-08-20__bread",)))
    assert len(by_slug) == 2 and {h.slug for h in by_slug} == {"2025-08-20__bread"}
    window = SearchFilters(since=date(2025, 4, 1), until=date(2025, 6, 1))
    assert {h.slug for h in db.run(search, embedder, "bread", k=10, filters=window)} == {"2025-05-10__firewall"}
    summaries = db.run(search, embedder, "bread", k=10, filters=SearchFilters(kinds=("summary",)))
    assert len(summaries) == 2 and {h.kind for h in summaries} == {"summary"}


@pytest.mark.usefixtures("corpus")
def test_search_uses_hnsw_index(db: Database, embedder: Embedder) -> None:
    """EXPLAIN of the vector query shows the model's HNSW index (sequential and bitmap scans disabled, tiny table)."""

    def plan(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off")
        return explain(conn, *args, **kwargs)

    text = db.run(plan, embedder, "firewall", k=5)
    assert f"Index Scan using {hnsw_index_name(embedder.name)}" in text


# -- hybrid: words and meaning ---------------------------------------------------

# Messages about part numbers that differ from the one asked for by a digit or
# two: close in meaning to a query for a part number, but not the right one.
_DECOYS = [
    "Part ZK88312 is back in stock; order it from the usual supplier.",
    "The supplier says part ZK83128 ships on Monday.",
    "Part ZK81823 was returned because the housing cracked.",
    "We replaced part ZK28813 under warranty last week.",
    "Part ZK88231 costs forty euros including delivery.",
]
_RARE = "ZK88213"


@pytest.fixture
def mixed(db: Database, config: Config, embedder: Embedder) -> None:
    """A long answer, a bread question, part-number decoys, notes hiding a rare code, a French meeting."""
    filler = "\n\n".join(" ".join(random.Random(n).choice(_FILLER) for _ in range(5)) for n in range(8))
    write_conversation(
        config.paths.conversations,
        "2025-03-01__birds",
        [("user", "Tell me everything you know, in one long answer."), ("assistant", _long_message())],
        title="Long answer",
    )
    write_conversation(
        config.paths.conversations,
        "2025-08-20__bread",
        [
            ("user", "Why did my bread not rise?"),
            ("assistant", "Your yeast may have been dead, or the dough too cold to ferment."),
        ],
    )
    write_conversation(
        config.paths.conversations,
        "2025-07-01__parts",
        [("user" if n % 2 == 0 else "assistant", text) for n, text in enumerate(_DECOYS)],
    )
    write_conversation(
        config.paths.conversations,
        "2025-07-02__notes",
        [
            ("user", "Here are my notes from the week."),
            ("assistant", f"{filler}\n\nAlso, the night shift logged {_RARE} at 03:12 without comment.\n\n{filler}"),
        ],
    )
    write_conversation(
        config.paths.conversations,
        "2025-07-03__reunion",
        [
            ("user", "Peux-tu écrire le résumé de la réunion d'équipe de lundi ?"),
            ("assistant", "Voici le résumé : l'équipe a validé le calendrier et reporté la migration à septembre."),
        ],
    )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)


def _found(hits: list[SearchHit], slug: str) -> bool:
    return any(h.slug == slug for h in hits)


@pytest.mark.usefixtures("mixed")
def test_hybrid_finds_a_rare_code_that_vector_search_misses(db: Database, embedder: Embedder) -> None:
    """An exact code buried in a long message: vector search ranks look-alike codes first, hybrid finds it."""
    vector = db.run(search, embedder, _RARE, k=5, mode="vector")
    assert not _found(vector, "2025-07-02__notes"), [h.slug for h in vector]
    text = db.run(search, None, _RARE, k=5, mode="text")
    assert [h.slug for h in text] == ["2025-07-02__notes"]
    assert _RARE in text[0].snippet
    hybrid = db.run(search, embedder, _RARE, k=5)
    assert _found(hybrid, "2025-07-02__notes")
    hit = next(h for h in hybrid if h.slug == "2025-07-02__notes")
    assert hit.text_rank == 1 and hit.kind == "message" and hit.seq == 1


@pytest.mark.usefixtures("mixed")
def test_hybrid_finds_a_paraphrase_that_text_search_misses(db: Database, embedder: Embedder) -> None:
    """A question sharing no word with the answer: text search misses it, hybrid finds it by meaning."""
    query = "loaf stayed flat after proofing"
    assert not _found(db.run(search, None, query, k=5, mode="text"), "2025-08-20__bread")
    hybrid = db.run(search, embedder, query, k=3)
    assert hybrid[0].slug == "2025-08-20__bread"
    assert hybrid[0].vector_rank == 1 and hybrid[0].text_rank is None


@pytest.mark.usefixtures("mixed")
def test_accents_are_folded(db: Database) -> None:
    """`resume reunion` finds `résumé de la réunion`, and `équipe` is found as `equipe`, in text search."""
    hits = db.run(search, None, "resume reunion", k=5, mode="text")
    assert {h.slug for h in hits} == {"2025-07-03__reunion"}
    assert len(hits) == 2
    assert [h.slug for h in db.run(search, None, "EQUIPE", k=5, mode="text")][:1] == ["2025-07-03__reunion"]


@pytest.mark.usefixtures("mixed")
def test_stemming_matches_english_and_french_word_forms(db: Database) -> None:
    """Plural and verb forms match in both languages: `migrations` finds `migration`, `validés` finds `validé`."""
    assert {h.slug for h in db.run(search, None, "migrations", k=5, mode="text")} == {
        "2025-07-03__reunion",  # "la migration"
        "2025-03-01__birds",  # "the longest migration"
    }
    assert db.run(search, None, "calendriers validés", k=5, mode="text")[0].slug == "2025-07-03__reunion"
    assert "2025-08-20__bread" in {h.slug for h in db.run(search, None, "ferments", k=5, mode="text")}


@pytest.mark.usefixtures("mixed")
def test_text_search_without_a_match_is_empty(db: Database, embedder: Embedder) -> None:
    """Text mode returns [] when no word matches, and a query of stop words only matches nothing."""
    assert db.run(search, None, "xylophonic zeppelin", k=5, mode="text") == []
    assert db.run(search, None, "the and of le la", k=5, mode="text") == []
    assert len(db.run(search, embedder, "the and of le la", k=3)) == 3  # hybrid falls back on meaning


@pytest.mark.usefixtures("mixed")
@pytest.mark.parametrize("mode", MODES)
def test_scores_and_ranks_per_mode(db: Database, embedder: Embedder, mode: Mode) -> None:
    """Each mode's score is its own (cosine, BM25, fused normalised scores), hits are sorted by it, with their ranks."""
    hits = db.run(search, embedder, "part supplier", k=4, mode=mode)
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        if mode == "vector":
            assert h.vector_rank is not None and h.text_rank is None and -1 <= h.score <= 1
        elif mode == "text":
            assert h.text_rank is not None and h.vector_rank is None and h.score > 0
        else:
            assert (h.vector_rank, h.text_rank) != (None, None) and 0 <= h.score <= 1


def test_normalized_scales_each_list_to_0_1() -> None:
    """Min-max within the list: its best 1, its last 0; a list of equal scores (or one) all 1; order kept."""
    scaled = normalized([Candidate("message", 1, 12.0), Candidate("message", 2, 9.0), Candidate("summary", 3, 4.0)])
    assert [(c.ref_id, c.score) for c in scaled] == [(1, 1.0), (2, pytest.approx(5 / 8)), (3, 0.0)]
    assert [c.score for c in normalized([Candidate("message", 1, 0.3)])] == [1.0]
    assert [c.score for c in normalized([Candidate("message", 1, 0.3), Candidate("message", 2, 0.3)])] == [1.0, 1.0]
    assert normalized([]) == []


def test_fuse_adds_weighted_scores() -> None:
    """Each list adds weight x score, divided by the weights of the lists given; a hit in both beats the tops of one."""
    fused = fuse(
        {
            "vector": [Candidate("message", 1, 1.0), Candidate("message", 2, 0.8)],
            "text": [Candidate("summary", 7, 1.0), Candidate("message", 2, 0.9)],
        },
        weights={},
    )
    assert [(f.kind, f.ref_id) for f in fused] == [("message", 2), ("message", 1), ("summary", 7)]
    assert fused[0].score == pytest.approx((0.8 + 0.9) / 2)
    assert fused[0].ranks == {"vector": 2, "text": 2}
    assert fused[1].score == fused[2].score == pytest.approx(0.5)  # a tie: the fixed order (kind, id) decides


def test_fuse_weighs_each_list() -> None:
    """By default the text list weighs more than the vector list: its first hit beats vector's first."""
    fused = fuse(
        {
            "vector": [Candidate("message", 1, 1.0), Candidate("message", 2, 0.0)],
            "text": [Candidate("message", 3, 1.0)],
        }
    )
    total = FUSION_WEIGHTS["text"] + FUSION_WEIGHTS["vector"]
    assert [f.ref_id for f in fused] == [3, 1, 2]
    assert fused[0].score == pytest.approx(FUSION_WEIGHTS["text"] / total)
    assert fused[1].score == pytest.approx(FUSION_WEIGHTS["vector"] / total)
    assert fused[2].score == 0.0


def test_fuse_ignores_an_empty_list_and_keeps_a_shared_rank() -> None:
    """An empty list weighs nothing; candidates given a rank (messages of one summary) keep it."""
    fused = fuse(
        {"x": [Candidate("message", 1, 0.5, rank=3), Candidate("message", 2, 0.5, rank=3)], "text": []},
        weights={"x": 2.0, "text": 5.0},
    )
    assert [f.score for f in fused] == pytest.approx([0.5, 0.5])
    assert [f.ranks["x"] for f in fused] == [3, 3]


def test_one_long_message_does_not_crowd_out_the_others(db: Database, config: Config, embedder: Embedder) -> None:
    """A message whose 60+ chunks are all closer than anything else still counts once, and k is filled."""
    rng = random.Random(11)
    budget = "\n\n".join(" ".join(rng.choice(_FILLER[:1]) for _ in range(4)) for _ in range(250))
    write_conversation(config.paths.conversations, "2025-02-02__budget", [("assistant", budget)])
    write_conversation(
        config.paths.conversations,
        "2025-08-20__bread",
        [
            ("user", "Why did my bread not rise?"),
            ("assistant", "Your yeast may have been dead, or the dough too cold to ferment."),
            ("user", "Should I use more salt?"),
        ],
    )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    chunks = db.run(lambda conn: conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    assert chunks > 60  # every one of them closer to the query than any other text
    hits = db.run(search, embedder, "quarterly budget review", k=4, mode="vector")
    assert [h.slug for h in hits] == ["2025-02-02__budget"] + ["2025-08-20__bread"] * 3


# -- filters fill k in every mode --------------------------------------------------


@pytest.fixture
def kiwis(db: Database, config: Config, embedder: Embedder) -> None:
    """Three conversations about kiwis, each with user and assistant messages and L1/L2 summaries."""
    for n, day in enumerate(("2025-01-10", "2025-02-10", "2025-03-10")):
        slug = f"{day}__kiwi_{n}"
        write_conversation(
            config.paths.conversations,
            slug,
            [
                ("user", f"How do I grow kiwi vines in a garden, question {n}?"),
                ("assistant", f"Kiwi vines need a male and a female plant and a strong trellis ({n})."),
                ("user", f"When are kiwi fruits ripe enough to pick ({n})?"),
                ("assistant", f"Pick kiwi fruits in late autumn and let them ripen indoors ({n})."),
            ],
        )
        write_summaries(
            config.paths.summaries,
            slug,
            [
                {"level": 1, "covers": [0, 1], "content": f"Growing kiwi vines on a trellis ({n})."},
                {"level": 1, "covers": [2, 3], "content": f"Harvesting kiwi fruits ({n})."},
                {"level": 2, "covers": [0, 1, 2, 3], "content": f"Kiwi growing and harvest ({n})."},
            ],
        )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)


@pytest.mark.usefixtures("kiwis")
@pytest.mark.parametrize("mode", MODES)
def test_filters_fill_k_in_every_mode(db: Database, embedder: Embedder, mode: Mode) -> None:
    """Each filter returns exactly k hits when k matching texts exist, all of them matching, in every mode."""

    def run(k: int, **filters: object) -> list[SearchHit]:
        return db.run(search, embedder, "kiwi", k=k, filters=SearchFilters(**filters), mode=mode)  # type: ignore[arg-type]

    users = run(5, roles=("user",))
    assert len(users) == 5 and {h.role for h in users} == {"user"}
    level1 = run(6, levels=(1,))
    assert len(level1) == 6 and {(h.kind, h.level) for h in level1} == {("summary", 1)}
    summaries = run(9, kinds=("summary",))
    assert len(summaries) == 9 and {h.kind for h in summaries} == {"summary"}
    messages = run(12, kinds=("message",))
    assert len(messages) == 12 and {h.kind for h in messages} == {"message"}
    one = run(7, slugs=("2025-02-10__kiwi_1",))
    assert len(one) == 7 and {h.slug for h in one} == {"2025-02-10__kiwi_1"}
    window = run(14, since=date(2025, 2, 1), until=date(2025, 3, 31))
    assert len(window) == 14 and {h.slug for h in window} == {"2025-02-10__kiwi_1", "2025-03-10__kiwi_2"}


def test_selective_filter_fills_k_through_the_hnsw_index(db: Database, config: Config, embedder: Embedder) -> None:
    """With the HNSW index forced, a role filter matching none of the first ef_search neighbours still fills k."""
    rng = random.Random(3)
    closer = [
        ("assistant", f"Kiwi note {n}: {rng.choice(['prune', 'water', 'feed', 'tie'])} the kiwi vines.")
        for n in range(120)
    ]
    farther = [("user", f"Something about the weather and kiwi, day {n}.") for n in range(3)]
    write_conversation(config.paths.conversations, "2025-04-01__many_kiwis", closer + farther)
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)

    def forced(conn: psycopg.Connection[object], mode: Mode) -> tuple[str, list[SearchHit]]:
        # A tiny table: without these, sorting all its rows is the cheapest plan.
        conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
        filters = SearchFilters(roles=("user",))
        plan = explain(conn, embedder, "kiwi vines", k=3, filters=filters)
        return plan, search(conn, embedder, "kiwi vines", k=3, filters=filters, mode=mode)

    for mode in ("vector", "hybrid"):
        plan, hits = db.run(forced, mode)
        assert f"Index Scan using {hnsw_index_name(embedder.name)}" in plan
        assert len(hits) == 3 and {h.role for h in hits} == {"user"}, mode


def test_index_scan_stopped_short_is_done_again_exactly(db: Database, config: Config) -> None:
    """An iterative scan that gives up at hnsw.max_scan_tuples before finding k matches is redone exactly.

    3,000 assistant messages sit near the query and 3 user messages at its
    antipode (synthetic vectors: the model is not needed to shape the graph).
    Capped at 200 tuples, the index scan stops among the assistants.
    """
    model, dim = "test-synthetic", 384
    rng = np.random.default_rng(11)
    query = np.zeros(dim, dtype=np.float32)
    query[0] = 1.0
    turns = [("assistant", f"Note {n} about the garden.") for n in range(3000)]
    turns += [("user", f"Question {n} about the weather.") for n in range(3)]
    write_conversation(config.paths.conversations, "2025-04-01__crowded", turns)
    Syncer(db, config).reconcile()

    def synthetic_vectors(conn: psycopg.Connection[object]) -> None:
        rows = []
        for text in claim_pending(conn, model, 10_000):
            side = -1.0 if text.content.startswith("Question") else 1.0
            vector = side * query + 0.4 * rng.standard_normal(dim).astype(np.float32)
            rows.append(ChunkVector(text, 0, 0, len(text.content), vector / np.linalg.norm(vector)))
        write_embeddings(conn, model, rows)
        ensure_vector_index(conn, model, dim)
        conn.execute("ANALYZE embeddings, messages")

    db.run(synthetic_vectors)

    def capped(conn: psycopg.Connection[object], cap: int) -> tuple[str, list[SearchHit], list[bool]]:
        # A small table: without these, sorting all its rows is the cheapest plan.
        conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off")
        conn.execute("SELECT set_config('hnsw.max_scan_tuples', %s, true)", (str(cap),))
        sought = SearchQuery("weather", query, model, dim)
        filters = SearchFilters(roles=("user",))
        plan = explain_query(conn, sought, k=3, filters=filters)
        started = len(queries_run)
        hits = search_query(conn, sought, k=3, filters=filters, mode="vector")
        return plan, hits, queries_run[started:]

    queries_run: list[bool] = []
    original = search_module._prepare_vector

    def recording(*args: object, exact: bool) -> object:
        queries_run.append(exact)
        return original(*args, exact=exact)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_module, "_prepare_vector", recording)
        plan, hits, tries = db.run(capped, 200)
    assert f"Index Scan using {hnsw_index_name(model)}" in plan
    assert tries == [False, True]  # through the index, which came back short, then exactly
    assert len(hits) == 3 and {h.role for h in hits} == {"user"}


@pytest.mark.usefixtures("kiwis")
def test_narrow_conversation_filter_is_searched_exactly(
    db: Database, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slug or date filter selecting few chunks skips the HNSW index; above the limit it uses it; same hits."""
    one_day = SearchFilters(since=date(2025, 2, 10), until=date(2025, 2, 10), roles=("user",))

    def run(conn: psycopg.Connection[object]) -> tuple[str, list[SearchHit]]:
        # Statistics, as autovacuum keeps them: without any, the planner's guess of the
        # table's size follows its row width, and the model's B-tree index looked as cheap.
        conn.execute("ANALYZE embeddings")
        conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        plan = explain(conn, embedder, "kiwi harvest", k=3, filters=one_day)
        return plan, search(conn, embedder, "kiwi harvest", k=3, filters=one_day, mode="vector")

    exact_plan, exact_hits = db.run(run)
    assert "hnsw" not in exact_plan and "embeddings_conversation" in exact_plan
    monkeypatch.setattr(search_module, "EXACT_MAX_CHUNKS", 5)  # the filter keeps 7 chunks
    index_plan, index_hits = db.run(run)
    assert f"Index Scan using {hnsw_index_name(embedder.name)}" in index_plan
    assert len(exact_hits) == 2 and {(h.slug, h.role) for h in exact_hits} == {("2025-02-10__kiwi_1", "user")}
    assert [(h.kind, h.ref_id) for h in exact_hits] == [(h.kind, h.ref_id) for h in index_hits]


# -- full-text index limits ------------------------------------------------------


def test_snippet_starts_at_the_sentence_with_most_query_words() -> None:
    skiing = "Then we went skiing in the Alps, skiing all day!"
    text = "  Hello there. We talked about the weather. " + skiing
    assert search_module._snippet(text, "when did we go skiing in the alps") == "…" + skiing
    assert search_module._snippet(text, "hello") == "Hello there. We talked about the weather. " + skiing
    assert search_module._snippet(text, "xylophone zebra") == search_module._snippet(text, "")  # no word: the start


def test_snippet_of_unpunctuated_text_starts_just_before_the_first_query_word() -> None:
    """A log or a transcript without punctuation is one long sentence: the snippet still shows where the words are."""
    text = " ".join(f"line{n} ok" for n in range(2_000)) + " disk quota exceeded on volume seven " + "ok " * 500
    snippet = search_module._snippet(text, "quota exceeded")
    assert snippet.startswith("…") and "disk quota exceeded on volume seven" in snippet
    assert len(snippet) <= search_module.SNIPPET_CHARS + 1  # and the leading ellipsis
    assert snippet.index("quota") <= search_module.SNIPPET_LEAD_CHARS + 1


def test_a_text_hit_shows_the_passage_of_its_words(db: Database, config: Config) -> None:
    """Found by words, a long message shows the sentence where they are, far from its start."""
    filler = " ".join(f"Paragraph {n} is about nothing in particular." for n in range(300))
    write_conversation(
        config.paths.conversations, "2025-05-05__long", [("user", filler + " The zeppelin landed in Friedrichshafen.")]
    )
    Syncer(db, config).reconcile()
    hits = db.run(search, None, "zeppelin Friedrichshafen", k=1, mode="text")
    assert hits[0].snippet == "…The zeppelin landed in Friedrichshafen."


def test_huge_message_is_stored_and_searchable_by_its_start(db: Database, config: Config) -> None:
    """A 5 MB message of distinct words stores without error; text search finds words from its indexed start."""

    def word(n: int) -> str:
        letters = ""
        for _ in range(6):
            n, r = divmod(n, 26)
            letters += "abcdefghijklmnopqrstuvwxyz"[r]
        return "q" + letters

    huge = " ".join(word(n) for n in range(640_000))
    assert len(huge) > 5_000_000
    write_conversation(config.paths.conversations, "2025-09-09__huge", [("user", huge), ("assistant", "Noted.")])
    report = Syncer(db, config).reconcile()
    assert report.failed == 0

    def lexemes(conn: psycopg.Connection[object]) -> int:
        row = conn.execute("SELECT length(tsv) FROM messages WHERE seq = 0").fetchone()
        return int(row[0]) if row else 0

    assert db.run(lexemes) > 10_000
    hits = db.run(search, None, word(12), k=3, mode="text")
    assert [(h.slug, h.seq) for h in hits] == [("2025-09-09__huge", 0)]
    assert word(12) in hits[0].snippet
    assert db.run(search, None, word(600_000), k=3, mode="text") == []  # beyond the indexed 100,000 characters


def test_a_date_in_the_query_lifts_the_texts_of_that_day(db: Database, config: Config, embedder: Embedder) -> None:
    """Two near-identical turns on different days: the day the question names decides which comes first."""
    for slug in ("2024-01-03__walk", "2024-03-15__walk"):
        write_conversation(
            config.paths.conversations,
            slug,
            [("user", "We hiked up to the lake above the village this morning."), ("assistant", "Sounds lovely!")],
        )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    january = db.run(search, embedder, "Where did we hike on 3 Jan 2024?", k=2)
    march = db.run(search, embedder, "Where did we hike on 15 March 2024?", k=2)
    assert (january[0].slug, january[0].seq) == ("2024-01-03__walk", 0)
    assert (march[0].slug, march[0].seq) == ("2024-03-15__walk", 0)


def test_a_summary_hit_lifts_the_messages_it_covers(db: Database, config: Config, embedder: Embedder) -> None:
    """A turn sharing nothing with the question is found because the summary covering it matches."""
    write_conversation(
        config.paths.conversations,
        "2025-04-01__choice",
        [
            ("user", "The quarterly budget review covered office supplies and travel expenses."),
            ("assistant", "Traffic on the ring road was slow this morning because of roadworks."),
            ("user", "Yes, that one!"),
            ("assistant", "The football match ended in a draw after a late penalty."),
        ],
    )
    write_summaries(
        config.paths.summaries,
        "2025-04-01__choice",
        [{"level": 1, "covers": [2], "content": "The user picked the sourdough starter with 75% hydration."}],
    )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    query = "which sourdough starter hydration did I pick"
    assert not any(h.seq == 2 for h in db.run(search, None, query, k=3, mode="text") if h.kind == "message")
    hits = db.run(search, embedder, query, k=2)
    assert [(h.kind, h.seq) for h in hits] == [("summary", 2), ("message", 2)]


def test_covered_messages_pass_the_role_and_date_filters(db: Database, config: Config) -> None:
    """The messages a summary lifts are filtered like any candidate: by role, and by their own day."""
    folder = config.paths.conversations / "2025-04-02__pair"
    folder.mkdir(parents=True)
    (folder / "messages.jsonl").write_text(
        '{"role": "user", "content": "first", "ts": "2025-04-02T10:00:00"}\n'
        '{"role": "assistant", "content": "second", "ts": "2025-04-05T10:00:00"}\n',
        encoding="utf-8",
    )
    write_summaries(config.paths.summaries, "2025-04-02__pair", [{"level": 1, "covers": [0, 1], "content": "both"}])
    Syncer(db, config).reconcile()
    with db.connection() as conn:
        summary_id = conn.execute("SELECT id FROM summaries").fetchone()
        ids = dict(conn.execute("SELECT role, id FROM messages").fetchall())
        assert summary_id is not None
        lists = {"text": [Candidate("summary", summary_id[0], 1.0)]}
        every = search_module._covered_lists(conn, lists, SearchFilters())
        users = search_module._covered_lists(conn, lists, SearchFilters(roles=("user",)))
        fifth = search_module._covered_lists(conn, lists, SearchFilters(since=date(2025, 4, 5)))
    assert [(c.ref_id, c.rank) for c in every["text_covered"]] == [(ids["user"], 1), (ids["assistant"], 1)]
    assert [c.ref_id for c in users["text_covered"]] == [ids["user"]]
    assert [c.ref_id for c in fifth["text_covered"]] == [ids["assistant"]]
