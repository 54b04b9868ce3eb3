"""memoryd.Memory in-process: search with context, filters, conversations, recent, hits by id, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

import memoryd
from memoryd.api import MAX_K, MAX_QUERY_CHARS, LocalMemory, Memory
from memoryd.config import Config
from memoryd.db import Database
from memoryd.embed import embed_pending
from memoryd.errors import InvalidRequest, NotFound
from memoryd.results import ConversationView, Hit
from memoryd.sync import Syncer
from tests.conftest import write_summaries

pytestmark = pytest.mark.slow

GARDEN = "2025-01-10__garden"
ROBOT = "2025-02-20__robot_arm"
ROBOT_V2 = "2025-02-21__robot_arm_v2"


def _write(root: Path, slug: str, messages: list[dict[str, Any]]) -> None:
    folder = root / slug
    folder.mkdir(parents=True)
    (folder / "messages.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages), encoding="utf-8")


@pytest.fixture
def memory(config: Config, db: Database, embedder: Any) -> Iterator[Memory]:
    """Three conversations with summaries, stored and embedded; a Memory on them sharing the session's model."""
    conversations, summaries = config.paths.conversations, config.paths.summaries
    _write(
        conversations,
        GARDEN,
        [
            {"role": "user", "content": "My tomato plants have yellow leaves.", "ts": "2025-01-10T09:00:00Z"},
            {"role": "assistant", "content": "Lower leaves yellowing usually means a nitrogen shortage."},
            {"role": "user", "content": "Should I add compost or a liquid fertiliser?", "ts": "2025-03-05T10:00:00Z"},
            {"role": "assistant", "content": "A balanced liquid fertiliser acts faster; compost helps next season."},
            {"role": "user", "content": "Thanks, I will water it in tonight.", "ts": "2025-03-05T10:05:00Z"},
        ],
    )
    _write(
        conversations,
        ROBOT,
        [
            {"role": "user", "content": "The servo on my robot arm jitters when it holds a position."},
            {"role": "assistant", "content": "Servo jitter at rest is often a noisy PWM signal or a weak supply."},
            {"role": "user", "content": "The arm is powered from the Arduino's 5V pin."},
        ],
    )
    _write(
        conversations,
        ROBOT_V2,
        [
            {"role": "user", "content": "Second try on the robot arm: a separate 6V supply for the servos."},
            {"role": "assistant", "content": "Good: share the ground between the supply and the Arduino."},
        ],
    )
    write_summaries(
        summaries,
        GARDEN,
        [
            {"level": 1, "covers": [0, 1], "content": "Tomato leaves turn yellow: a nitrogen deficiency."},
            {"level": 2, "covers": [0, 1, 2, 3, 4], "content": "Gardening advice on feeding tomato plants."},
        ],
    )
    Syncer(db, config).reconcile()
    embed_pending(db, embedder)
    with Memory(config, LocalMemory(config, db, embedder=lambda: embedder)) as mem:
        yield mem


def test_public_surface_is_importable() -> None:
    """`import memoryd` exposes Memory, the result types and the errors, and the package ships py.typed."""
    for name in ("Memory", "Hit", "Context", "Turn", "SummaryRef", "ConversationView", "ConversationInfo"):
        assert name in memoryd.__all__ and hasattr(memoryd, name)
    for name in ("MemorydError", "InvalidRequest", "NotFound", "DatabaseUnavailable"):
        assert name in memoryd.__all__ and hasattr(memoryd, name)
    assert (Path(memoryd.__file__).parent / "py.typed").is_file()


def test_import_memoryd_loads_neither_torch_nor_the_driver() -> None:
    """Importing the package is cheap: the model and the database driver load only when used."""
    code = "import sys, memoryd; print(sorted(m for m in ('torch', 'psycopg', 'numpy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_message_hit_carries_turns_around_it_and_covering_summaries(memory: Memory) -> None:
    """A message hit holds its whole text, the turns before and after it, and the summaries covering it."""
    hits = memory.search("nitrogen shortage yellow leaves", k=3, kinds=["message"], context=1)
    hit = next(h for h in hits if h.slug == GARDEN and h.seq == 1)
    assert hit.kind == "message" and hit.role == "assistant" and hit.id.startswith("message:")
    assert hit.text == "Lower leaves yellowing usually means a nitrogen shortage."
    assert hit.date == date(2025, 1, 10) and hit.title
    assert [t.seq for t in hit.context.before] == [0] and [t.seq for t in hit.context.after] == [2]
    assert hit.context.before[0].ts == "2025-01-10T09:00:00Z"
    assert [(s.level, s.covers) for s in hit.context.summaries] == [(1, (0, 1)), (2, (0, 1, 2, 3, 4))]


def test_summary_hit_context_is_the_start_of_what_it_covers(memory: Memory) -> None:
    """A summary hit's context is the first messages it covers, 2 * context + 1 of them."""
    hits = memory.search("feeding tomato plants", kinds=["summary"], levels=[2], context=1)
    assert [h.level for h in hits] == [2]
    assert [t.seq for t in hits[0].context.covered] == [0, 1, 2]
    assert hits[0].context.before == () and hits[0].context.summaries == ()


def test_context_zero_returns_bare_hits(memory: Memory) -> None:
    """context=0 asks for no surrounding turns at all."""
    hits = memory.search("servo jitter", context=0)
    assert hits and all(h.context == memoryd.Context() for h in hits)


def test_since_until_use_message_timestamps_else_the_conversation_date(memory: Memory) -> None:
    """A message's own day decides when its timestamp has one; otherwise its conversation's date does."""
    march = memory.search("fertiliser compost water tonight", mode="text", since="2025-03-01", until="2025-03-31")
    assert {(h.slug, h.seq) for h in march} == {(GARDEN, 2), (GARDEN, 4)}
    january = memory.search("tomato leaves nitrogen", mode="text", kinds=["message"], until=date(2025, 1, 31))
    # seq 0 has its own January timestamp; seq 1 has none and takes the conversation's date (2025-01-10).
    assert {(h.slug, h.seq) for h in january} == {(GARDEN, 0), (GARDEN, 1)}
    hybrid = memory.search("compost or fertiliser", since="2025-03-01", k=5)
    assert hybrid and all(h.slug == GARDEN and h.seq in (2, 4) for h in hybrid)


def test_slug_prefix_and_slugs_select_one_group(memory: Memory) -> None:
    """slug_prefix selects every conversation starting with it; listed slugs add to the group."""
    by_prefix = memory.search("robot arm servo power", slug_prefix="2025-02-2", k=20)
    assert {h.slug for h in by_prefix} == {ROBOT, ROBOT_V2}
    group = memory.search("power supply", slugs=[ROBOT_V2], slug_prefix="2025-01", k=20)
    assert {h.slug for h in group} == {ROBOT_V2, GARDEN}
    several = memory.search("power supply", slugs=[ROBOT, ROBOT_V2], k=20)
    assert {h.slug for h in several} == {ROBOT, ROBOT_V2}


def test_roles_and_levels_together_select_both_kinds(memory: Memory) -> None:
    """roles select messages, levels select summaries; with both, either kind may come back, nothing else."""
    hits = memory.search("tomato", roles=["user"], levels=[1], k=20)
    assert {(h.kind, h.role, h.level) for h in hits} <= {("message", "user", None), ("summary", None, 1)}
    assert {h.kind for h in hits} == {"message", "summary"}


@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_a_larger_k_only_extends_the_ranking(memory: Memory, mode: str) -> None:
    """The first results do not depend on k: the candidate lists are sized once for every k up to 50."""
    small = memory.search("robot arm tomato servo fertiliser", k=3, mode=mode, context=0)  # type: ignore[arg-type]
    large = memory.search("robot arm tomato servo fertiliser", k=12, mode=mode, context=0)  # type: ignore[arg-type]
    assert [h.id for h in large[:3]] == [h.id for h in small]


def test_hit_by_id_returns_the_same_hit_with_context(memory: Memory) -> None:
    """A hit's id fetches it again, with the same text and place, and any context asked for."""
    found = memory.search("servo jitter at rest", k=1, kinds=["message"])[0]
    again = memory.hit(found.id, context=1)
    assert (again.id, again.slug, again.seq, again.text) == (found.id, found.slug, found.seq, found.text)
    assert [t.seq for t in again.context.before + again.context.after] == [
        t.seq for t in found.context.before + found.context.after if abs(t.seq - (found.seq or 0)) <= 1
    ]


def test_conversation_whole_and_windows(memory: Memory) -> None:
    """A conversation comes whole, or as a window around a seq, with the summaries covering what is shown."""
    whole = memory.conversation(GARDEN)
    assert [t.seq for t in whole.turns] == [0, 1, 2, 3, 4] and not whole.truncated
    assert whole.info.messages == 5 and whole.info.summaries == 2
    assert [s.level for s in whole.summaries] == [1, 2]
    window = memory.conversation(GARDEN, around=4, window=1)
    assert [t.seq for t in window.turns] == [3, 4] and window.first_seq == 3
    assert [s.level for s in window.summaries] == [2]  # the L1 covers 0-1 only
    head = memory.conversation(GARDEN, window=2)
    assert [t.seq for t in head.turns] == [0, 1]
    assert ConversationView.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


def test_recent_lists_latest_conversations_first(memory: Memory) -> None:
    """recent() orders by conversation date, newest first, and since cuts older ones."""
    assert [c.slug for c in memory.recent()] == [ROBOT_V2, ROBOT, GARDEN]
    assert [c.slug for c in memory.recent(limit=1)] == [ROBOT_V2]
    assert [c.slug for c in memory.recent(since="2025-02-21")] == [ROBOT_V2]
    info = memory.recent()[2]
    assert (info.messages, info.summaries, info.date) == (5, 2, date(2025, 1, 10))


def test_hits_survive_a_round_trip_through_json(memory: Memory) -> None:
    """to_dict() → JSON → from_dict() gives back the same hits: what the query service relies on."""
    hits = memory.search("tomato", k=5)
    assert [Hit.from_dict(json.loads(json.dumps(h.to_dict()))) for h in hits] == hits


def test_status_says_who_answers(memory: Memory) -> None:
    """status() counts the rows and says the answers come from this process."""
    status = memory.status()
    assert status["answered_by"] == "in-process" == memory.via
    assert (status["conversations"], status["messages"], status["summaries"]) == (3, 10, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.search(""), "query: expected a non-empty string"),
        (lambda m: m.search("x" * (MAX_QUERY_CHARS + 1)), f"at most {MAX_QUERY_CHARS:,} are searched"),
        (lambda m: m.search("x", k=0), "k: expected 1 to"),
        (lambda m: m.search("x", k=MAX_K + 1), f"k: expected 1 to {MAX_K}"),
        (lambda m: m.search("x", mode="fuzzy"), "mode: expected one of vector, text, hybrid"),
        (lambda m: m.search("x", roles=["robot"]), "roles: expected some of"),
        (lambda m: m.search("x", since="last year"), "since: expected a date as YYYY-MM-DD"),
        (lambda m: m.search("x", since="2025-02-01", until="2025-01-01"), "is after until"),
        (lambda m: m.search("x", roles=["user"], kinds=["summary"]), "these filters exclude every text"),
        (lambda m: m.search("x", context=-1), "context: expected 0 to"),
        (lambda m: m.hit("message:abc"), "a hit id is 'message:<number>'"),
        (lambda m: m.conversation(GARDEN, window=0), "window: expected 1 to"),
        (lambda m: m.recent(limit=0), "limit: expected 1 to"),
    ],
)
def test_bad_arguments_are_invalid_requests_naming_the_field(memory: Memory, call: Any, message: str) -> None:
    """Every bad argument raises InvalidRequest (a ValueError) whose message names the field."""
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(memory)


def test_missing_conversation_and_hit_are_not_found(memory: Memory) -> None:
    """An unknown slug or a deleted hit is NotFound, not an empty answer."""
    with pytest.raises(NotFound, match="no conversation 'nope'"):
        memory.conversation("nope")
    with pytest.raises(NotFound, match="no message with id 999999999"):
        memory.hit("message:999999999")


def test_open_finds_the_configuration_like_the_cli(config: Config, tmp_path: Path, monkeypatch: Any) -> None:
    """Memory.open() reads $MEMORYD_CONFIG like the CLI; dsn= overrides the file's database."""
    path = tmp_path / "memoryd.toml"
    path.write_text(f'[paths]\nconversations = "{config.paths.conversations}"\n[service]\nenabled = false\n')
    monkeypatch.setenv("MEMORYD_CONFIG", str(path))
    assert config.database.dsn is not None
    with Memory.open(dsn=config.database.dsn) as mem:
        assert mem.via == "in-process"
        assert mem.config.paths.conversations == config.paths.conversations
        assert mem.status()["conversations"] == 0
        assert mem.search("anything", mode="text") == []


def test_text_search_in_process_never_imports_torch(memory: Memory) -> None:
    """A text-mode search in a fresh process loads neither torch nor sentence-transformers."""
    assert memory.config.database.dsn is not None
    code = (
        "import sys; from memoryd.api import Memory; from memoryd.config import Config, DatabaseConfig;"
        f"mem = Memory.open(Config(database=DatabaseConfig(dsn={memory.config.database.dsn!r})), service=False);"
        "hits = mem.search('tomato', mode='text'); mem.close();"
        "print(len(hits), sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(maxsplit=1) == ["3", "[]"]


def test_a_cached_precision_choice_is_trusted_without_a_probe(embedder: Any, monkeypatch: Any) -> None:
    """verify_cached=False (one-shot searches) takes the remembered `auto` choice and encodes nothing at load."""
    from memoryd.config import EmbeddingConfig
    from memoryd.embed import Embedder

    calls: list[int] = []
    original = Embedder._encode_with

    def counting(self: Embedder, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Embedder, "_encode_with", counting)
    trusted = Embedder(EmbeddingConfig(), verify_cached=False)
    assert calls == []
    assert trusted.precision == embedder.precision  # the session's model made (and cached) the choice
    vector = trusted.encode_queries(["tomato leaves"])[0]
    assert float((vector * embedder.encode(["tomato leaves"])[0]).sum()) > 0.99
