"""A ChatGPT export conversation saved as conversation.json: the current branch, hidden turns, parts."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from memoryd.formats import parse_conversation
from tests.formats.helpers import export_conversation, make_folder, parse_error


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


def chatgpt_node(
    node_id: str,
    parent: str | None,
    role: str,
    content: dict[str, object],
    *,
    recipient: str = "all",
    channel: str | None = None,
    name: str | None = None,
) -> dict[str, object]:
    """One node of a ChatGPT mapping, with the message fields an image-generation chat carries."""
    message = {
        "id": node_id,
        "author": {"role": role, "name": name, "metadata": {}},
        "create_time": 1_735_000_000.0,
        "content": content,
        "status": "finished_successfully",
        "end_turn": None,
        "weight": 1.0,
        "metadata": {},
        "recipient": recipient,
        "channel": channel,
    }
    return {"id": node_id, "message": message, "parent": parent, "children": []}


def test_chatgpt_messages_to_a_tool_are_not_turns(tmp_path: Path) -> None:
    """Image prompts, code sent to python and internal_tool commentary (recipient other than all) are left out."""
    nodes = [
        chatgpt_node("u1", None, "user", {"content_type": "text", "parts": ["Dessine un chat roux"]}),
        chatgpt_node(
            "a1",
            "u1",
            "assistant",
            {"content_type": "text", "parts": ['{"prompt": "a ginger cat", "size": "1024x1024", "n": 1}']},
            recipient="t2uay3k.sj1i4kz",
        ),
        chatgpt_node(
            "t1",
            "a1",
            "tool",
            {"content_type": "multimodal_text", "parts": [{"content_type": "image_asset_pointer", "width": 1024}]},
            name="t2uay3k.sj1i4kz",
        ),
        chatgpt_node(
            "a2",
            "t1",
            "assistant",
            {"content_type": "text", "parts": ["The image is ready; do not describe it."]},
            recipient="internal_tool",
            channel="commentary",
        ),
        chatgpt_node("a3", "a2", "assistant", {"content_type": "text", "parts": ["Voici ton chat roux."]}),
        chatgpt_node(
            "a4",
            "a3",
            "assistant",
            {"content_type": "code", "language": "python", "text": "print(1)"},
            recipient="python",
        ),
        chatgpt_node("t2", "a4", "tool", {"content_type": "execution_output", "text": "1"}, name="python"),
    ]
    mapping = {node["id"]: node for node in nodes}
    document = {"title": "Chat roux", "create_time": 1_735_000_000.0, "mapping": mapping, "current_node": "t2"}
    conversation = parse_conversation(make_folder(tmp_path, {"conversation.json": json.dumps(document)}))
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "Dessine un chat roux"),
        ("tool", "[image]"),
        ("assistant", "Voici ton chat roux."),
        ("tool", "1"),
    ]
    assert conversation.warnings == ()
