"""Markdown and plain-text transcripts: role markers, fences, front matter, the hand-made variants."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from memoryd.formats import parse_conversation
from memoryd.formats.markdown import Speaker, speaker_line
from tests.formats.helpers import BASIC_MD, FIXTURES, fixture_folder, make_folder, parse_error

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


def test_question_answer_headings(tmp_path: Path) -> None:
    """chatgpt-to-markdown's `# _Question_` / `# _Answer_` with `----------` separators are user and assistant turns."""
    conversation = parse_conversation(fixture_folder(tmp_path, FIXTURES / "markdown" / "question_answer.md"))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "Écris un poème sur l'orage."),
        ("assistant", "Le tonnerre gronde,\nl'éclair répond.\n\n---\n\nUn second couplet ?"),
        ("user", "Merci !"),
        ("assistant", "De rien."),
    ]
    assert conversation.title == "orage codé textuel"
    assert conversation.warnings == ()


def test_named_speaker_is_mapped_with_a_warning(tmp_path: Path) -> None:
    """`## Sven` beside `## User` is the assistant, and the warning names the mapping; sub-headings stay content."""
    conversation = parse_conversation(fixture_folder(tmp_path, FIXTURES / "markdown" / "named_speaker.md"))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "Can you help me plan a weekend in Lisbon?"),
        ("assistant", "Of course! Start with the Alfama in the morning.\n\n### Day two\n\nTake the tram to Belém."),
        ("user", "And where do I eat?"),
        ("assistant", "Try a tasca near the Bairro Alto."),
    ]
    assert conversation.title == "Planning a trip"
    assert conversation.warnings == ("speaker 'Sven' (## Name lines) read as assistant",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("**Sven:** Bonjour\n\n**User:** Salut\n\n**Sven:** Ça va ?\n", ["assistant", "user", "assistant"]),
        ("## Assistant\nHi\n## Maria\nHello\n", ["assistant", "user"]),
    ],
)
def test_named_speaker_takes_the_missing_role(tmp_path: Path, text: str, expected: list[str]) -> None:
    """A name takes whichever side the role markers lack, in bold markers too."""
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.md": text}))
    assert [m.role for m in conversation.messages] == expected
    assert len(conversation.warnings) == 1
    assert "read as" in conversation.warnings[0]


@pytest.mark.parametrize(
    "text",
    [
        "## User\nHi\n## Assistant\nHello\n## Notes\nstill the assistant\n",
        "## User\nHi\n## Sven\nHello\n## Maria\nHey\n",
        "## User\nHi\n## what about this\nstill the user\n",
    ],
)
def test_headings_that_are_not_a_single_missing_speaker_stay_content(tmp_path: Path, text: str) -> None:
    """Both sides present, two different names, or a lower-case phrase: no mapping, headings stay in the text."""
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.md": text}))
    assert all("read as" not in warning for warning in conversation.warnings)
    assert len(conversation.messages) == 2 if "Assistant" in text else len(conversation.messages) == 1
