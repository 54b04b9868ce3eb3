"""OpenAI chat shape: ``{"messages": [{"role", "content", "tool_calls"?}]}``.

The native ``{"role", "content", "ts"?}`` message is its plain case, so one
reader serves ``messages.jsonl``, the native ``conversation.json`` and
fine-tuning or eval datasets written by OpenAI-compatible tools.  Content
may be a string or a list of content parts (text kept, images and audio as
placeholders); an assistant turn that only calls tools keeps them as
``[tool: NAME] arguments`` lines, so nothing the model did is lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from memoryd.formats.common import Fail, json_type, normalize_role, short_repr, speaker_name, ts_text
from memoryd.records import ROLES, Message, clean_text

# Roles of the OpenAI API that are not in ROLES, by what they are.
OPENAI_ROLES: Mapping[str, str] = MappingProxyType({"developer": "system", "function": "tool"})
_PART_PLACEHOLDERS: Mapping[str, str] = MappingProxyType(
    {
        "image_url": "[image]",
        "input_image": "[image]",
        "input_audio": "[audio]",
        "audio": "[audio]",
        "file": "[file]",
        "input_file": "[file]",
    }
)
_TEXT_KEYS = ("text", "refusal")


def openai_message(value: dict[str, object], seq: int, fail: Fail) -> Message:
    """One message object: ``role`` and ``content`` (a string, content parts, or null beside ``tool_calls``)."""
    role_value = value.get("role")
    if not isinstance(role_value, str):
        raise fail(f"role: expected a string, got {json_type(role_value)}")
    role = normalize_role(role_value) or OPENAI_ROLES.get(role_value.strip().casefold())
    if role is None:
        raise fail(f"role: unknown role {short_repr(role_value)} (expected one of {', '.join(ROLES)})")
    calls = _tool_call_lines(value, fail)
    content = value.get("content")
    if isinstance(content, list):
        text = _parts_text(content, fail)
    elif isinstance(content, str) or (content is None and calls):
        text = content or ""
    else:
        raise fail(f"content: expected a string or an array of content parts, got {json_type(content)}")
    text = "\n".join(piece for piece in (text, *calls) if piece) if calls else text
    # A tool message's ``name`` is the function's, not a speaker's.
    speaker = speaker_name(value) if role != "tool" else None
    return Message(seq=seq, role=role, content=clean_text(text), ts=ts_text(value.get("ts")), speaker=speaker)


def _parts_text(parts: list[object], fail: Fail) -> str:
    """Text parts joined by blank lines; other parts as a short placeholder (``[image]``)."""
    pieces: list[str] = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            pieces.append(part)
            continue
        if not isinstance(part, dict):
            raise fail(f"content[{index}]: expected a content part object, got {json_type(part)}")
        text = next((part[key] for key in _TEXT_KEYS if isinstance(part.get(key), str)), None)
        if text is not None:
            pieces.append(text)
            continue
        kind = part.get("type")
        pieces.append(_PART_PLACEHOLDERS.get(kind, f"[{kind}]") if isinstance(kind, str) else "[attachment]")
    return "\n\n".join(piece for piece in pieces if piece)


def _tool_call_lines(value: Mapping[str, object], fail: Fail) -> list[str]:
    """``[tool: NAME] arguments`` for each of ``tool_calls`` (and the older single ``function_call``)."""
    calls = value.get("tool_calls")
    if calls is None:
        calls = [{"function": value["function_call"]}] if isinstance(value.get("function_call"), dict) else []
    if not isinstance(calls, list):
        raise fail(f"tool_calls: expected an array, got {json_type(calls)}")
    lines: list[str] = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise fail(f'tool_calls[{index}]: expected {{"function": {{"name", "arguments"}}}}')
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        lines.append(f"[tool: {function['name']}] {arguments or ''}".rstrip())
    return lines
