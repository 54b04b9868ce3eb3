"""Search by meaning with the real model, through the HNSW index."""

from __future__ import annotations

import random

import pytest

from daemon.config import Config
from daemon.db import Database
from daemon.embed import Embedder, embed_pending
from daemon.search import SearchFilters, explain, search
from daemon.store import hnsw_index_name
from daemon.sync import Syncer
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
    by_role = db.run(search, embedder, "firewall", k=3, filters=SearchFilters(role="user"))
    assert len(by_role) == 3 and {h.role for h in by_role} == {"user"}
    by_level = db.run(search, embedder, "firewall", k=5, filters=SearchFilters(level=2))
    assert [(h.kind, h.level) for h in by_level] == [("summary", 2)]
    by_slug = db.run(search, embedder, "firewall", k=5, filters=SearchFilters(slugs=("2025-08-20__bread",)))
    assert len(by_slug) == 2 and {h.slug for h in by_slug} == {"2025-08-20__bread"}
    window = SearchFilters(since=__import__("datetime").date(2025, 4, 1), until=__import__("datetime").date(2025, 6, 1))
    assert {h.slug for h in db.run(search, embedder, "bread", k=10, filters=window)} == {"2025-05-10__firewall"}
    summaries = db.run(search, embedder, "bread", k=10, filters=SearchFilters(kind="summary"))
    assert len(summaries) == 2 and {h.kind for h in summaries} == {"summary"}


@pytest.mark.usefixtures("corpus")
def test_search_uses_hnsw_index(db: Database, embedder: Embedder) -> None:
    """EXPLAIN of the search query shows the model's HNSW index (sequential scans disabled, tiny table)."""

    def plan(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        conn.execute("SET LOCAL enable_seqscan = off")
        return explain(conn, *args, **kwargs)

    text = db.run(plan, embedder, "firewall", k=5)
    assert f"Index Scan using {hnsw_index_name(embedder.name)}" in text
