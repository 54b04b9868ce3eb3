"""Conversation folders → Conversation: formats, precedence, metadata and bad input."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memoryd.errors import ParseError
from memoryd.parse import (
    Speaker,
    date_from_slug,
    find_transcript,
    parse_conversation,
    speaker_line,
    title_from_slug,
)
from memoryd.records import ROLES, clean_text

SLUG = "2025-06-25__orage_codé_textuel"


def make_folder(tmp_path: Path, files: dict[str, str | bytes], slug: str = SLUG) -> Path:
    folder = tmp_path / slug
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def jsonl(*objects: object) -> str:
    return "".join(json.dumps(obj, ensure_ascii=False) + "\n" for obj in objects)


def parse_error(folder: Path) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_conversation(folder)
    return info.value


BASIC_MD = "## User\nHello\n\n## Assistant\nHi!\n"


# --- choosing the transcript


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (
            ["messages.jsonl", "conversation.json", "conversation.md", "x.md"],
            "messages.jsonl",
        ),
        (["conversation.json", "conversation.md", "x.md"], "conversation.json"),
        (["conversation.md", "x.md", "y.txt"], "conversation.md"),
        (["notes.txt"], "notes.txt"),
        (["chat.md", ".hidden.md", "chat.md~", "#chat.md#", "chat.md.swp"], "chat.md"),
    ],
)
def test_transcript_precedence(tmp_path: Path, present: list[str], expected: str) -> None:
    """messages.jsonl, then conversation.json, conversation.md, the single *.md/*.txt."""
    folder = make_folder(tmp_path, dict.fromkeys(present, "x"))
    assert find_transcript(folder) == folder / expected


def test_several_fallback_candidates_is_an_error(tmp_path: Path) -> None:
    """Two *.md/*.txt files and no conversation.md: the folder is named and both files listed."""
    folder = make_folder(tmp_path, {"a.md": BASIC_MD, "b.txt": BASIC_MD})
    error = parse_error(folder)
    assert error.path == folder
    assert "a.md" in error.reason
    assert "b.txt" in error.reason


def test_no_transcript_is_an_error(tmp_path: Path) -> None:
    """A folder without any transcript names the folder and the expected files."""
    folder = make_folder(tmp_path, {"meta.json": "{}", "notes.pdf": b"%PDF"})
    error = parse_error(folder)
    assert error.path == folder
    assert error.reason == ("no transcript (expected messages.jsonl, conversation.json or conversation.md)")


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    """A slug whose folder vanished is a ParseError, not an OSError."""
    error = parse_error(tmp_path / "gone")
    assert error.path == tmp_path / "gone"


def test_shadowed_transcript_gives_a_warning(tmp_path: Path) -> None:
    """messages.jsonl beside conversation.md is read, and the ignored file is mentioned."""
    folder = make_folder(
        tmp_path,
        {
            "messages.jsonl": jsonl({"role": "user", "content": "hi"}),
            "conversation.md": BASIC_MD,
        },
    )
    conversation = parse_conversation(folder)
    assert conversation.source_format == "jsonl"
    assert conversation.warnings == ("ignored conversation.md, messages.jsonl takes precedence",)


# --- messages.jsonl


def test_jsonl_messages(tmp_path: Path) -> None:
    """Each line is a message; seq is its position, ts kept as text, blank lines skipped."""
    text = (
        jsonl({"role": "user", "content": "Bonjour", "ts": "2025-06-25T14:03:00+02:00"})
        + "\n   \n"
        + jsonl({"role": "assistant", "content": "Salut", "extra": 1})
    )
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    conversation = parse_conversation(folder)
    assert conversation.slug == SLUG
    assert conversation.source_format == "jsonl"
    assert conversation.source_path == folder / "messages.jsonl"
    assert [(m.seq, m.role, m.content, m.ts) for m in conversation.messages] == [
        (0, "user", "Bonjour", "2025-06-25T14:03:00+02:00"),
        (1, "assistant", "Salut", None),
    ]
    assert conversation.warnings == ()


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(1719316980, "1719316980"), (1.5, "1.5"), (None, None), ("", None)],
)
def test_jsonl_ts_becomes_text(tmp_path: Path, ts: object, expected: str | None) -> None:
    """A numeric ts is kept as its JSON spelling; null or empty means no ts."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": "user", "content": "x", "ts": ts})})
    assert parse_conversation(folder).messages[0].ts == expected


@pytest.mark.parametrize(
    ("written", "role"),
    [
        ("USER", "user"),
        ("Human", "user"),
        ("utilisateur", "user"),
        ("AI", "assistant"),
        ("ChatGPT", "assistant"),
        ("claude", "assistant"),
        ("Assistant", "assistant"),
        ("System", "system"),
        ("tool", "tool"),
    ],
)
def test_jsonl_role_aliases(tmp_path: Path, written: str, role: str) -> None:
    """Roles are case-insensitive and common aliases map to the four roles."""
    folder = make_folder(tmp_path, {"messages.jsonl": jsonl({"role": written, "content": "x"})})
    assert parse_conversation(folder).messages[0].role == role


def test_jsonl_keeps_empty_content(tmp_path: Path) -> None:
    """An explicit empty message keeps its place, so seq matches the file's numbering."""
    folder = make_folder(
        tmp_path,
        {"messages.jsonl": jsonl({"role": "user", "content": ""}, {"role": "assistant", "content": "b"})},
    )
    assert [(m.seq, m.content) for m in parse_conversation(folder).messages] == [
        (0, ""),
        (1, "b"),
    ]


@pytest.mark.parametrize(
    ("bad_line", "reason_part"),
    [
        ('{"role": "user", "content": ', "invalid JSON"),
        ('["user", "hi"]', "expected a JSON object"),
        ('{"role": "user"}', "content"),
        ('{"role": "user", "content": 3}', "content"),
        ('{"role": "robot", "content": "x"}', "unknown role 'robot'"),
        ('{"role": 1, "content": "x"}', "role"),
        ('{"content": "x"}', "role"),
    ],
)
def test_jsonl_errors_name_path_and_line(tmp_path: Path, bad_line: str, reason_part: str) -> None:
    """A bad line fails the file with its path and 1-based line number (blank lines counted)."""
    text = jsonl({"role": "user", "content": "ok"}) + "\n" + bad_line + "\n"
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    error = parse_error(folder)
    assert error.path == folder / "messages.jsonl"
    assert error.line == 3
    assert reason_part in error.reason


def test_jsonl_without_messages_is_an_error(tmp_path: Path) -> None:
    """A transcript holding only blank lines has no messages, which is an error."""
    folder = make_folder(tmp_path, {"messages.jsonl": "\n  \n"})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "messages.jsonl", "no messages")


# --- conversation.json


def test_json_transcript(tmp_path: Path) -> None:
    """conversation.json gives messages, its title and its created date."""
    document = {
        "title": "Un orage",
        "created": "2024-01-02T10:00:00Z",
        "messages": [
            {"role": "user", "content": "a", "ts": "t1"},
            {"role": "assistant", "content": "b"},
        ],
    }
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)}, slug="no-date-here")
    conversation = parse_conversation(folder)
    assert conversation.source_format == "json"
    assert conversation.title == "Un orage"
    assert conversation.created_date == date(2024, 1, 2)
    assert [(m.seq, m.role, m.content, m.ts) for m in conversation.messages] == [
        (0, "user", "a", "t1"),
        (1, "assistant", "b", None),
    ]


def test_json_created_beats_slug_date(tmp_path: Path) -> None:
    """conversation.json's created wins over the slug's date."""
    document = {"created": "2024-01-02", "messages": [{"role": "user", "content": "a"}]}
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)})
    assert parse_conversation(folder).created_date == date(2024, 1, 2)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ("[]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        ('{"mapping": {}}', "no messages"),
        ('{"chat_messages": []}', "no messages"),
        ('{"mapping": []}', "mapping: expected an object, got an array"),
        ('{"chat_messages": {}}', "chat_messages: expected an array, got an object"),
        (
            '[{"mapping": {}}]',
            "a whole ChatGPT data export (an array of conversations), not one conversation:"
            " split it with `memoryd import`",
        ),
        ('{"title": "x"}', 'no "messages" list'),
        ('{"messages": {}}', "messages: expected an array, got an object"),
        ('{"messages": []}', "no messages"),
        (
            '{"messages": [{"role": "user", "content": "a"}], "title": 3}',
            "title: expected a string, got a number",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}], "created": "soon"}',
            "created: not an ISO date or datetime: 'soon'",
        ),
    ],
)
def test_json_document_errors(tmp_path: Path, document: str, reason: str) -> None:
    """A conversation.json of the wrong shape fails with its path and a precise reason."""
    folder = make_folder(tmp_path, {"conversation.json": document})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "conversation.json", reason)


def test_json_message_error_names_index(tmp_path: Path) -> None:
    """An error in a message names its index in the messages array."""
    document = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": None},
        ]
    }
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)})
    error = parse_error(folder)
    assert error.path == folder / "conversation.json"
    assert error.reason.startswith("messages[2]: content")


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    """Invalid JSON in conversation.json reports the line the decoder stopped at."""
    folder = make_folder(tmp_path, {"conversation.json": '{\n  "messages": [\n  ,]\n}'})
    error = parse_error(folder)
    assert error.path == folder / "conversation.json"
    assert error.line == 3
    assert error.reason.startswith("invalid JSON")


# --- Markdown


def test_markdown_transcript(tmp_path: Path) -> None:
    """Role headings open messages; the content between them is kept verbatim."""
    text = "# Le titre\n\n## User\n\nBonjour,\n  indented *markdown*\n\nsecond paragraph\n\n\n## Assistant\nSalut\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.source_format == "markdown"
    assert conversation.title == "Le titre"
    assert [(m.seq, m.role, m.content) for m in conversation.messages] == [
        (0, "user", "Bonjour,\n  indented *markdown*\n\nsecond paragraph"),
        (1, "assistant", "Salut"),
    ]
    assert conversation.warnings == ()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("## User", ("h2", "user", None)),
        ("## user:", ("h2", "user", None)),
        ("## HUMAN", ("h2", "user", None)),
        ("## Utilisateur", ("h2", "user", None)),
        ("## You", ("h2", "user", None)),
        ("## ChatGPT", ("h2", "assistant", None)),
        ("## Claude", ("h2", "assistant", None)),
        ("## AI", ("h2", "assistant", None)),
        ("## System", ("h2", "system", None)),
        ("## Tool", ("h2", "tool", None)),
        ("## User 2025-06-25T14:03:00+02:00", ("h2", "user", "2025-06-25T14:03:00+02:00")),
        ("## Assistant (2025-06-25 14:03)", ("h2", "assistant", "2025-06-25 14:03")),
        ("## Assistant [2025-06-25 14:03]", ("h2", "assistant", "2025-06-25 14:03")),
        ("## User — 2025-06-25 14:03", ("h2", "user", "2025-06-25 14:03")),
        ("## User - 14:03", ("h2", "user", "14:03")),
        ("## User: 25/06/2025", ("h2", "user", "25/06/2025")),
        ("## User ##", ("h2", "user", None)),
        ("## User\r", ("h2", "user", None)),
        ("   ## User", ("h2", "user", None)),
        ("### Human", ("h3", "user", None)),
        ("### Assistant", ("h3", "assistant", None)),
        ("#### You:", ("h4", "user", None)),
        ("#### ChatGPT:", ("h4", "assistant", None)),
        ("### 👤 User", ("h3", "user", None)),
        ("## **Assistant:**", ("h2", "assistant", None)),
        ("## Notes", None),
        ("## User stories", None),
        ("## Users", None),
        ("# User", None),
        ("    ## User", None),
        ("##User", None),
        ("####### User", None),
        ("User", None),
    ],
)
def test_speaker_heading(line: str, expected: tuple[str, str, str | None] | None) -> None:
    """Which heading lines open a message (levels 2 to 6), with which role and timestamp."""
    assert speaker_line(line) == (None if expected is None else Speaker(*expected))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("**User:**", Speaker("bold", "user")),
        ("**User:** Bonjour", Speaker("bold", "user", text="Bonjour")),
        ("**ChatGPT:** Salut !", Speaker("bold", "assistant", text="Salut !")),
        ("**Human**: hi", Speaker("bold", "user", text="hi")),
        ("**Assistant**", Speaker("bold", "assistant")),
        ("**Assistant (2025-06-25 14:03):** ok", Speaker("bold", "assistant", "2025-06-25 14:03", "ok")),
        ("**User:** line\r", Speaker("bold", "user", text="line")),
        ("**User** experience matters", None),
        ("**Note:** something", None),
        ("**Users:** many", None),
        ("text **User:** inline", None),
    ],
)
def test_speaker_bold(line: str, expected: Speaker | None) -> None:
    """Bold speaker lines open a message; what follows the label is its first line."""
    assert speaker_line(line) == expected


def test_markdown_heading_timestamps(tmp_path: Path) -> None:
    """A timestamp after the role on the heading line becomes the message's ts."""
    text = "## User 2025-06-25T14:03:00+02:00\nq\n## Assistant (2025-06-25 14:03)\na\n## User\nq2\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    assert [m.ts for m in parse_conversation(folder).messages] == [
        "2025-06-25T14:03:00+02:00",
        "2025-06-25 14:03",
        None,
    ]


@pytest.mark.parametrize("fence", ["```", "~~~", "````"])
def test_fenced_role_heading_does_not_split(tmp_path: Path, fence: str) -> None:
    """`## User` inside a fenced code block is content, not a new message."""
    body = f"Voici:\n{fence}markdown\n## User\nfake\n## Assistant\n{fence}\nfin"
    text = f"## User\nq\n## Assistant\n{body}\n## User\nmerci\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert messages[1].content == body


def test_fence_needs_matching_closer(tmp_path: Path) -> None:
    """A ``` fence is not closed by ~~~ nor by a shorter fence."""
    body = "````\n~~~\n```\n## User\n````"
    folder = make_folder(tmp_path, {"conversation.md": f"## Assistant\n{body}\n"})
    assert parse_conversation(folder).messages[0].content == body


def test_unclosed_fence_does_not_swallow_the_rest(tmp_path: Path) -> None:
    """A code block left open (truncated output) does not hide the headings after it."""
    text = "## Assistant\n```python\nprint(1)\n## User\nnext question\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [(m.role, m.content) for m in messages] == [
        ("assistant", "```python\nprint(1)"),
        ("user", "next question"),
    ]


def test_non_role_headings_are_content(tmp_path: Path) -> None:
    """`## Notes`, `## User stories` and `# Heading` inside a message stay in its content."""
    body = "intro\n## Notes\n- a\n## User stories\n# Big\nend"
    folder = make_folder(tmp_path, {"conversation.md": f"## Assistant\n{body}\n"})
    conversation = parse_conversation(folder)
    assert [m.content for m in conversation.messages] == [body]
    assert conversation.title == "orage codé textuel"


def test_empty_markdown_messages_are_skipped(tmp_path: Path) -> None:
    """A heading with nothing under it is dropped and seq stays contiguous."""
    text = "## User\n\n## System\n   \n\n## Assistant\nA\n## Tool\n## User\nB\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    messages = parse_conversation(folder).messages
    assert [(m.seq, m.role, m.content) for m in messages] == [
        (0, "assistant", "A"),
        (1, "user", "B"),
    ]


def test_markdown_without_role_marker_is_one_user_message(tmp_path: Path) -> None:
    """Markdown without any role marker is kept whole as one user message, with a warning."""
    text = "# Title\n\n## Notes\ntext\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert [(m.seq, m.role, m.content) for m in conversation.messages] == [(0, "user", text.rstrip("\n"))]
    assert conversation.title == "Title"
    assert conversation.warnings == ("no role marker (## User, **User:**, Human: …) found: stored as one user message",)


def test_markdown_with_only_empty_messages_is_an_error(tmp_path: Path) -> None:
    """Role headings with no content make a transcript with no messages."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\n\n## Assistant\n"})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "conversation.md", "no messages")


def test_markdown_preamble_is_reported(tmp_path: Path) -> None:
    """Text before the first role heading (other than the title) is dropped with a warning."""
    text = "# T\nsome notes\n\nmore\n## User\nq\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.title == "T"
    assert conversation.warnings == ("ignored 2 line(s) before the first role heading",)


def test_markdown_crlf(tmp_path: Path) -> None:
    """Windows line endings: headings are recognised and content keeps its own CRLFs."""
    text = "# T\r\n## User 14:03\r\nline1\r\nline2\r\n\r\n## Assistant\r\nok\r\n"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.title == "T"
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == [
        ("user", "line1\r\nline2", "14:03"),
        ("assistant", "ok", None),
    ]


def test_single_txt_is_markdown(tmp_path: Path) -> None:
    """A folder's single .txt file is read as a Markdown transcript."""
    folder = make_folder(tmp_path, {"chat.txt": BASIC_MD})
    conversation = parse_conversation(folder)
    assert conversation.source_format == "markdown"
    assert conversation.source_path == folder / "chat.txt"
    assert len(conversation.messages) == 2


# --- Markdown variants (hand-made fixture files in tests/fixtures/markdown)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_folder(tmp_path: Path, *sources: Path, slug: str = SLUG) -> Path:
    """A conversation folder holding copies of fixture files."""
    return make_folder(tmp_path, {source.name: source.read_bytes() for source in sources}, slug=slug)


MARKDOWN_CASES = {
    "bold_speakers.md": (
        "Recette du pain",
        [
            ("user", "Comment avoir une croûte plus croustillante ?", None),
            ("assistant", "Cuisez dans une cocotte préchauffée.\nRetirez le couvercle après vingt minutes.", None),
            ("user", "Et la levée ?", None),
            ("assistant", "Une nuit au frigo.", None),
        ],
    ),
    "h3_human.md": (
        "orage codé textuel",
        [
            ("user", "What is a monad?", None),
            (
                "assistant",
                "A monoid in the category of endofunctors.\n\n#### System notes in the answer\n"
                "This sub-heading stays in the answer.",
                None,
            ),
            ("user", "Thanks!", None),
        ],
    ),
    "timestamps.md": (
        "orage codé textuel",
        [
            ("user", "Bonjour", "2025-06-25T14:03:00+02:00"),
            ("assistant", "Salut !", "2025-06-25 14:03:05"),
            ("user", "Ça va ?", "14:04"),
        ],
    ),
    "fenced_roles.md": (
        "orage codé textuel",
        [
            ("user", "How do I write a transcript file?", None),
            (
                "assistant",
                "Like this:\n\n```markdown\n## User\nHello\n\n## Assistant\nHi!\n```\n\n~~~\n"
                "**User:** also not a marker\n~~~\n\nThat's all.",
                None,
            ),
            ("user", "Thanks.", None),
        ],
    ),
    "plain_dialogue.txt": (
        "orage codé textuel",
        [
            ("user", "Can you summarise this?\nIt is two lines long.", None),
            ("assistant", "Sure: it is short.", None),
            ("user", "Thanks.", None),
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(MARKDOWN_CASES))
def test_markdown_variants(tmp_path: Path, name: str) -> None:
    """Bold speakers, ### headings, timestamps, fenced role lines and Human:/Assistant: lines parse as written."""
    title, expected = MARKDOWN_CASES[name]
    conversation = parse_conversation(fixture_folder(tmp_path, FIXTURES / "markdown" / name))
    assert conversation.source_format == "markdown"
    assert conversation.title == title
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == expected
    assert [m.seq for m in conversation.messages] == list(range(len(expected)))
    assert conversation.warnings == ()


def test_front_matter(tmp_path: Path) -> None:
    """Front matter gives title, date and tags, and is not part of any message."""
    conversation = parse_conversation(fixture_folder(tmp_path, FIXTURES / "markdown" / "front_matter.md", slug="notes"))
    assert conversation.title == "Orage : notes"
    assert conversation.created_date == date(2025, 6, 25)
    assert conversation.tags == ("météo", "poésie")
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "Un poème sur l'orage ?"),
        ("assistant", "Le tonnerre gronde."),
    ]


def test_front_matter_block_list_and_bad_date(tmp_path: Path) -> None:
    """Tags as a block list are read; a date that is not YYYY-MM-DD is a warning, not an error."""
    text = "---\ntitle: T\ndate: yesterday\ntags:\n  - a\n  - b\n---\n## User\nq\n"
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.md": text}, slug="x"))
    assert (conversation.title, conversation.created_date, conversation.tags) == ("T", None, ("a", "b"))
    assert conversation.warnings == ("front matter date: not a YYYY-MM-DD date: 'yesterday'",)


def test_meta_json_beats_front_matter(tmp_path: Path) -> None:
    """meta.json's title, date and tags win over the front matter's."""
    folder = fixture_folder(tmp_path, FIXTURES / "markdown" / "front_matter.md", FIXTURES / "native" / "meta.json")
    conversation = parse_conversation(folder)
    assert (conversation.title, conversation.created_date, conversation.tags) == (
        "Orage codé textuel",
        date(2025, 6, 25),
        ("poésie",),
    )


@pytest.mark.parametrize(
    "text",
    [
        "---\n## User\nq\n---\n## Assistant\na\n",  # not key: value lines: a thematic break
        "---\ntitle: never closed\n## User\nq\n",
    ],
)
def test_dashes_that_are_not_front_matter(tmp_path: Path, text: str) -> None:
    """A `---` block that is not closed or not made of `key: value` lines stays in the transcript."""
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.md": text}))
    assert conversation.messages[0].role == "user"
    assert conversation.title == "orage codé textuel"


def test_no_marker_fixture_is_one_user_message(tmp_path: Path) -> None:
    """A note without any role marker is stored whole, as one user message, with a warning."""
    source = FIXTURES / "markdown" / "no_marker.md"
    conversation = parse_conversation(fixture_folder(tmp_path, source))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", source.read_text(encoding="utf-8").strip())
    ]
    assert conversation.title == "Idées en vrac"
    assert len(conversation.warnings) == 1


def test_first_marker_style_wins(tmp_path: Path) -> None:
    """In a `## User` transcript, `### System` and `**User:**` lines inside an answer stay content."""
    body = "Design:\n### System\nthe parts\n**User:** the person\n## Notes"
    text = f"## User\nq\n## Assistant\n{body}\n## User\nthanks\n"
    messages = parse_conversation(make_folder(tmp_path, {"conversation.md": text})).messages
    assert [(m.role, m.content) for m in messages] == [("user", "q"), ("assistant", body), ("user", "thanks")]


@pytest.mark.parametrize(
    "text", ["User: only one role\nand more\n", "Note: a\nTodo: b\n", "  Human: indented\nAI: x\n"]
)
def test_plain_lines_need_a_dialogue(tmp_path: Path, text: str) -> None:
    """`Role:` lines count only when two roles alternate at the start of lines; otherwise one user message."""
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.md": text}))
    assert [(m.role, m.content) for m in conversation.messages] == [("user", text.rstrip("\n"))]


def test_bold_speaker_text_on_marker_line(tmp_path: Path) -> None:
    """With bold speakers the text after the label is the first line of the message."""
    text = "**Human:** one\ntwo\n**Assistant (12:00):**\nthree\n"
    messages = parse_conversation(make_folder(tmp_path, {"conversation.md": text})).messages
    assert [(m.role, m.content, m.ts) for m in messages] == [
        ("user", "one\ntwo", None),
        ("assistant", "three", "12:00"),
    ]


# --- ChatGPT and Claude conversations saved as conversation.json


def export_conversation(source: str, index: int) -> dict[str, object]:
    value = json.loads((FIXTURES / source / "conversations.json").read_text(encoding="utf-8"))[index]
    assert isinstance(value, dict)
    return value


def test_chatgpt_conversation_json(tmp_path: Path) -> None:
    """The branch ending at current_node, hidden and empty turns skipped, images and files as placeholders."""
    document = export_conversation("chatgpt", 0)
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)}, slug="no-date")
    conversation = parse_conversation(folder)
    assert conversation.source_format == "chatgpt"
    assert conversation.title == "Orage codé / textuel"
    assert conversation.created_date == date(2024, 6, 25)
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == [
        ("user", "Écris un poème sur l'orage.", "2024-06-25T12:03:01+00:00"),
        ("assistant", "Le tonnerre gronde,\nl'éclair répond.", "2024-06-25T12:03:03+00:00"),
        ("user", "[image]\nEt avec cette image ?\n\n[file: orage.png]", "2024-06-25T12:03:06+00:00"),
        ("assistant", "print('éclair')", "2024-06-25T12:03:07+00:00"),
        ("tool", "éclair", "2024-06-25T12:03:08+00:00"),
        ("assistant", "Voilà le poème final.", "2024-06-25T12:03:10+00:00"),
    ]
    assert conversation.warnings == ()


def test_chatgpt_other_branch_by_current_node(tmp_path: Path) -> None:
    """Pointing current_node at an abandoned branch shows that branch instead."""
    document = {**export_conversation("chatgpt", 0), "current_node": "a2-old"}
    folder = make_folder(tmp_path, {"conversation.json": json.dumps(document)})
    assert [m.content for m in parse_conversation(folder).messages] == [
        "Écris un poème sur l'orage.",
        "Le tonnerre gronde,\nl'éclair répond.",
        "Question avant modification.",
        "Réponse à la question modifiée.",
    ]


def test_chatgpt_without_current_node_follows_latest_branch(tmp_path: Path) -> None:
    """Without a usable current_node, the last child is followed from the root, with a warning."""
    document = {**export_conversation("chatgpt", 0), "current_node": "nowhere"}
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert conversation.messages[-1].content == "Voilà le poème final."
    assert conversation.warnings == ("current_node missing or unknown: followed the latest branch",)


def test_chatgpt_parent_cycle_is_an_error(tmp_path: Path) -> None:
    """A mapping whose parent links loop is refused, not followed forever."""
    mapping = {
        "a": {"message": None, "parent": "b", "children": []},
        "b": {"message": None, "parent": "a", "children": []},
    }
    folder = make_folder(tmp_path, {"conversation.json": json.dumps({"mapping": mapping, "current_node": "a"})})
    assert "form a cycle" in parse_error(folder).reason


def test_chatgpt_odd_parts_and_roles(tmp_path: Path) -> None:
    """Unknown parts become placeholders, unknown roles and text-less content are skipped with a warning."""

    def node(role: object, content: object, parent: str | None) -> dict[str, object]:
        return {"message": {"author": {"role": role}, "content": content}, "parent": parent, "children": []}

    mapping = {
        "1": node(
            "user",
            {
                "content_type": "multimodal_text",
                "parts": [{"content_type": "audio_asset_pointer"}, {"x": 1}, None, 3, "dit"],
            },
            None,
        ),
        "2": node("critic", {"content_type": "text", "parts": ["hidden"]}, "1"),
        "3": node("assistant", {"content_type": "sonic_webpage"}, "2"),
        "4": node("assistant", {"content_type": "text", "parts": ["ok"]}, "3"),
    }
    document = {"mapping": mapping, "current_node": "4", "create_time": "not a number", "title": 7}
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "[audio]\n[attachment]\ndit"),
        ("assistant", "ok"),
    ]
    assert conversation.warnings == (
        "skipped 1 message(s): content type 'sonic_webpage' has no text",
        "skipped 1 message(s): unknown author role 'critic'",
    )
    assert (conversation.title, conversation.created_date) == ("orage codé textuel", date(2025, 6, 25))


def test_claude_conversation_json(tmp_path: Path) -> None:
    """Text blocks of content (or text), sender as role, attachments noted by name, empty turns skipped."""
    document = export_conversation("claude", 0)
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert conversation.source_format == "claude"
    assert (conversation.title, conversation.created_date) == ("Plan de migration", date(2024, 5, 1))
    assert [(m.role, m.content, m.ts) for m in conversation.messages] == [
        ("user", "Comment migrer la base ?\n\n[attachment: schema.sql]", "2024-05-01T09:30:00.000000Z"),
        ("assistant", "Je regarde le schéma.\n\nVoici le plan.", "2024-05-01T09:31:00.000000Z"),
        ("user", "Merci, et cette photo ?\n\n[file: photo.jpg]", "2024-05-01T09:32:00.000000Z"),
        ("assistant", "De rien.", "2024-05-01T09:34:00.000000Z"),
    ]


def test_claude_odd_messages(tmp_path: Path) -> None:
    """Entries that are not objects or have an unknown sender are skipped with a warning."""
    document = {
        "name": None,
        "chat_messages": [[], {"sender": "robot", "text": "x"}, {"sender": "human", "text": "hi"}],
    }
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [("user", "hi")]
    assert conversation.warnings == (
        "skipped 1 message(s): expected an object, got an array",
        "skipped 1 message(s): unknown sender 'robot'",
    )


# --- bytes and text


def test_bom_is_stripped(tmp_path: Path) -> None:
    """A leading UTF-8 BOM is not part of the first line."""
    folder = make_folder(
        tmp_path,
        {"messages.jsonl": b"\xef\xbb\xbf" + jsonl({"role": "user", "content": "x"}).encode()},
    )
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "x"
    assert conversation.total_chars == len(jsonl({"role": "user", "content": "x"}))


def test_invalid_utf8_is_replaced_with_a_warning(tmp_path: Path) -> None:
    """Undecodable bytes become U+FFFD; the warning names the file, the byte offset and the line."""
    folder = make_folder(tmp_path, {"conversation.md": b"## User\nabc\xff\n"})
    conversation = parse_conversation(folder)
    assert conversation.messages[0].content == "abc\ufffd"
    assert conversation.warnings == (
        "conversation.md: not valid UTF-8 (first bad byte at offset 11, line 2), undecodable bytes replaced by U+FFFD",
    )


@pytest.mark.parametrize("name", ["messages.jsonl", "conversation.json", "conversation.md"])
def test_empty_file_is_an_error(tmp_path: Path, name: str) -> None:
    """A 0-byte transcript (often one still being written) is an error, not a conversation."""
    folder = make_folder(tmp_path, {name: b""})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / name, "empty file")


def test_clean_text_applied(tmp_path: Path) -> None:
    """NUL and lone surrogates in content become U+FFFD so PostgreSQL can store them."""
    text = '{"role": "user", "content": "a\\u0000b\\ud800c", "ts": "t\\u0000"}\n'
    folder = make_folder(tmp_path, {"messages.jsonl": text})
    message = parse_conversation(folder).messages[0]
    assert message.content == clean_text("a\x00b\ud800c")
    assert message.content.startswith("a\ufffdb\ufffd")
    assert message.ts == "t\ufffd"


def test_clean_text_applied_to_markdown(tmp_path: Path) -> None:
    """A raw NUL byte in a Markdown transcript is replaced too."""
    folder = make_folder(tmp_path, {"conversation.md": "## User\na\x00b\n"})
    assert parse_conversation(folder).messages[0].content == "a\ufffdb"


def test_totals_describe_the_transcript(tmp_path: Path) -> None:
    """total_chars counts decoded characters, total_lines counts lines, the last one too."""
    text = "## User\nété\n## Assistant\nok"
    folder = make_folder(tmp_path, {"conversation.md": text})
    conversation = parse_conversation(folder)
    assert conversation.total_chars == len(text)
    assert conversation.total_lines == 4


# --- titles, dates, meta.json


@pytest.mark.parametrize(
    ("slug", "title"),
    [
        ("2025-06-25__orage_codé_textuel", "orage codé textuel"),
        ("2025-06-25-orage", "orage"),
        ("2025-06-25_a__b", "a b"),
        ("plain-slug_name", "plain-slug name"),
        ("2025-06-25", "2025-06-25"),
        ("2025-06-25__", "2025-06-25__"),
    ],
)
def test_title_from_slug(slug: str, title: str) -> None:
    """The slug minus date and separators, `_` as spaces; the slug if nothing is left."""
    assert title_from_slug(slug) == title


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("2025-06-25__x", date(2025, 6, 25)),
        ("2025-06-25", date(2025, 6, 25)),
        ("2025-13-40__x", None),
        ("2025-02-30", None),
        ("x_2025-06-25", None),
        ("2025-06-250", None),
    ],
)
def test_date_from_slug(slug: str, expected: date | None) -> None:
    """A leading valid YYYY-MM-DD is the date; anything else is no date, never an error."""
    assert date_from_slug(slug) == expected


def test_invalid_slug_date_is_not_an_error(tmp_path: Path) -> None:
    """A folder named with an impossible date still parses, without created_date."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD}, slug="2025-13-40__x")
    conversation = parse_conversation(folder)
    assert conversation.created_date is None
    assert conversation.title == "x"


def test_meta_json_wins(tmp_path: Path) -> None:
    """meta.json's title, created_date and tags beat the transcript's and the slug's."""
    document = {
        "title": "JSON title",
        "created": "2024-01-01",
        "messages": [{"role": "user", "content": "a"}],
    }
    meta = {
        "title": "Meta title",
        "created_date": "2023-03-03",
        "tags": ["a", " b ", "a", ""],
    }
    folder = make_folder(
        tmp_path,
        {"conversation.json": json.dumps(document), "meta.json": json.dumps(meta)},
    )
    conversation = parse_conversation(folder)
    assert conversation.title == "Meta title"
    assert conversation.created_date == date(2023, 3, 3)
    assert conversation.tags == ("a", "b")


def test_markdown_title_beats_slug(tmp_path: Path) -> None:
    """Without meta.json, the Markdown `# Title` beats the slug."""
    folder = make_folder(tmp_path, {"conversation.md": "# Mon titre\n" + BASIC_MD})
    assert parse_conversation(folder).title == "Mon titre"


def test_empty_meta_fields_fall_back(tmp_path: Path) -> None:
    """meta.json with null or blank values leaves title and date to the next source."""
    folder = make_folder(
        tmp_path,
        {
            "conversation.md": BASIC_MD,
            "meta.json": '{"title": "  ", "created_date": null, "tags": null, "other": 1}',
        },
    )
    conversation = parse_conversation(folder)
    assert conversation.title == "orage codé textuel"
    assert conversation.created_date == date(2025, 6, 25)
    assert conversation.tags == ()


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ('{"title": 1}', "title: expected a string, got a number"),
        ('{"created_date": 20250625}', "created_date: expected a string, got a number"),
        (
            '{"created_date": "2025-13-01"}',
            "created_date: not a YYYY-MM-DD date: '2025-13-01'",
        ),
        ('{"tags": "a,b"}', "tags: expected a list of strings"),
        ('{"tags": ["a", 1]}', "tags: expected a list of strings"),
        ("[]", "expected a JSON object"),
        ("", "empty file"),
    ],
)
def test_meta_json_errors(tmp_path: Path, meta: str, reason: str) -> None:
    """A wrong meta.json fails the folder, naming meta.json and the key at fault."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD, "meta.json": meta})
    error = parse_error(folder)
    assert (error.path, error.reason) == (folder / "meta.json", reason)


def test_meta_json_syntax_error(tmp_path: Path) -> None:
    """Invalid JSON in meta.json names meta.json and the line."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD, "meta.json": '{\n"title": }'})
    error = parse_error(folder)
    assert error.path == folder / "meta.json"
    assert error.line == 2
    assert error.reason.startswith("invalid JSON")


# --- hashing


def test_source_hash_is_stable(tmp_path: Path) -> None:
    """Parsing the same folder twice, or an identical copy elsewhere, gives the same hash."""
    files: dict[str, str | bytes] = {
        "conversation.md": BASIC_MD,
        "meta.json": '{"tags": ["x"]}',
    }
    first = make_folder(tmp_path / "a", files)
    second = make_folder(tmp_path / "b", files)
    assert parse_conversation(first).source_hash == parse_conversation(first).source_hash
    assert parse_conversation(first).source_hash == parse_conversation(second).source_hash


def test_source_hash_follows_every_file(tmp_path: Path) -> None:
    """Changing the transcript, adding, changing or removing meta.json changes the hash."""
    folder = make_folder(tmp_path, {"conversation.md": BASIC_MD})
    hashes = [parse_conversation(folder).source_hash]
    (folder / "conversation.md").write_text(BASIC_MD + "more\n", encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").write_text("{}", encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").write_text('{"title": "t"}', encoding="utf-8")
    hashes.append(parse_conversation(folder).source_hash)
    (folder / "meta.json").unlink()
    hashes.append(parse_conversation(folder).source_hash)
    assert len(set(hashes[:4])) == 4
    assert hashes[4] == hashes[1]


def test_source_hash_covers_transcript_name(tmp_path: Path) -> None:
    """The same bytes under another transcript name are another source."""
    first = make_folder(tmp_path / "a", {"conversation.md": BASIC_MD})
    second = make_folder(tmp_path / "b", {"chat.md": BASIC_MD})
    assert parse_conversation(first).source_hash != parse_conversation(second).source_hash


# --- never anything but ParseError

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["user", "Assistant", "human", "robot", "2025-06-25"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["role", "content", "ts", "messages", "title", "created", "mapping"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=12,
)
_MD_LINES = st.sampled_from(
    [
        "## User",
        "## assistant (12:00)",
        "## Notes",
        "# T",
        "```",
        "~~~",
        "````x",
        "",
        "text",
        "\r",
    ]
) | st.text(max_size=20)
_TRANSCRIPT_TEXT = st.one_of(
    st.text(),
    st.lists(_MD_LINES, max_size=20).map("\n".join),
    st.lists(_JSON_VALUES.map(json.dumps), max_size=5).map("\n".join),
    _JSON_VALUES.map(json.dumps),
)
_NAMES = st.sampled_from(["messages.jsonl", "conversation.json", "conversation.md", "x.txt", "meta.json"])


def _check_fuzzed(folder: Path) -> None:
    try:
        conversation = parse_conversation(folder)
    except ParseError:
        return
    assert [m.seq for m in conversation.messages] == list(range(len(conversation.messages)))
    assert all(m.role in ROLES for m in conversation.messages)
    assert all("\x00" not in m.content for m in conversation.messages)
    assert conversation.title


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(name=_NAMES, text=_TRANSCRIPT_TEXT)
def test_random_text_only_raises_parse_error(tmp_path: Path, name: str, text: str) -> None:
    """Any text in a transcript or meta.json gives a Conversation or a ParseError, nothing else."""
    folder = tmp_path / SLUG
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    if name == "meta.json":
        (folder / "conversation.md").write_text(BASIC_MD, encoding="utf-8")
    (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))
    _check_fuzzed(folder)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(name=_NAMES, data=st.binary())
def test_random_bytes_only_raise_parse_error(tmp_path: Path, name: str, data: bytes) -> None:
    """Any bytes in a transcript or meta.json give a Conversation or a ParseError, nothing else."""
    folder = tmp_path / SLUG
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    if name == "meta.json":
        (folder / "conversation.md").write_text(BASIC_MD, encoding="utf-8")
    (folder / name).write_bytes(data)
    _check_fuzzed(folder)
