"""The tool-call parsers and prompt helpers of ``hologram.heads.tools`` on the texts models
write (Hermes / Qwen, Llama 3, Mistral), whole and streamed in pieces."""

from __future__ import annotations

import json

import pytest
from hologram.heads.tools import (
    ParsedCall,
    ToolStreamParser,
    fallback_messages,
    parse_tool_calls,
    tool_format,
    tool_grammar,
)

CASES = [
    ("hermes",
     ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
     '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),
     "Let me check.", [("get_weather", {"city": "Paris"}), ("get_time", {})]),
    # unterminated at the end of the output (the model stopped after the JSON)
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {"x": [1, 2]}}', "",
     [("f", {"x": [1, 2]})]),
    # not JSON: stays content
    ("hermes", "<tool_call>not a call</tool_call> done",
     "<tool_call>not a call</tool_call> done", []),
    ("hermes", "Just text.", "Just text.", []),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"a": 1}}', "", [("f", {"a": 1})]),
    ("llama3", '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}', "",
     [("f", {"a": 1}), ("g", {})]),
    ("llama3", "The answer is {not json}.", "The answer is {not json}.", []),
    ("mistral", ('[TOOL_CALLS][{"name": "f", "arguments": {"a": "b"}}, '
     '{"name": "g", "arguments": {}}]'), "", [("f", {"a": "b"}), ("g", {})]),
    ("mistral", "Hello there.", "Hello there.", []),
    # arguments written as a JSON string
    ("hermes", '<tool_call>{"name": "f", "arguments": "{\\"a\\": 2}"}</tool_call>', "",
     [("f", {"a": 2})]),
]


def _calls(calls: list[ParsedCall]) -> list[tuple[str, object]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
def test_parse_whole(fmt: str, text: str, content: str, calls: list[tuple[str, object]]) -> None:
    got_content, got = parse_tool_calls(text, fmt)
    assert got_content.strip() == content
    assert _calls(got) == calls


@pytest.mark.parametrize(("fmt", "text", "content", "calls"), CASES)
@pytest.mark.parametrize("piece", [1, 3, 7])
def test_parse_streamed(fmt: str, text: str, content: str, calls: list[tuple[str, object]],
                        piece: int) -> None:
    parser = ToolStreamParser(fmt)
    out: list[str] = []
    found: list[ParsedCall] = []
    for k in range(0, len(text), piece):
        c, f = parser.feed(text[k:k + piece])
        out.append(c)
        found.extend(f)
        # nothing of a call's markup is released as content
        if calls:
            assert "<tool_call>" not in "".join(out)
            assert '"name"' not in "".join(out)
    c, f = parser.finish()
    out.append(c)
    found.extend(f)
    assert "".join(out).strip() == content
    assert _calls(found) == calls


def test_format_from_template() -> None:
    assert tool_format("{{ '<tool_call>' }}{% if tools %}{% endif %}") == "hermes"
    assert tool_format("{{ '<|python_tag|>' }}{{ 'ipython' }}") == "llama3"
    assert tool_format("{{ '[TOOL_CALLS]' }}") == "mistral"
    assert tool_format("{{ messages }}") == "hermes"


def test_fallback_messages() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    msgs = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "r1", "tool_call_id": "c1"},
        {"role": "tool", "content": "r2", "tool_call_id": "c2"},
    ]
    out = fallback_messages(msgs, tools)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert json.dumps(tools[0]) in out[0]["content"]
    assert out[2]["content"] == ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n'
                                 "</tool_call>")
    assert out[3]["content"] == ("<tool_response>\nr1\n</tool_response>\n"
                                 "<tool_response>\nr2\n</tool_response>")
    assert all("tool_calls" not in m and "tool_call_id" not in m for m in out)
    # an existing system prompt gets the section appended
    out = fallback_messages([{"role": "system", "content": "Be brief."}, *msgs[:1]], tools)
    assert out[0]["content"].startswith("Be brief.\n\n# Tools")


def test_grammar_shapes() -> None:
    fn = [{"name": "f", "parameters": {"type": "object"}}]
    one = tool_grammar("hermes", fn, parallel=False)
    assert one.startswith('start: block\nblock: "<tool_call>\\n" call "\\n</tool_call>"\n')
    assert '{0,3}' in tool_grammar("hermes", fn, parallel=True)
    assert tool_grammar("mistral", fn, parallel=False).startswith('start: "[TOOL_CALLS][" call')
    assert '"parameters"' in tool_grammar("llama3", fn, parallel=False)
