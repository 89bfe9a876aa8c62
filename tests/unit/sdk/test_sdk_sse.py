"""The event-stream parser, against the WHATWG interpretation rules."""

from __future__ import annotations

import pytest

from ezthrottle._sse import ServerSentEvent, SSEParser


def parse(*chunks: str) -> list[ServerSentEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_event_type_data_and_id() -> None:
    events = parse('event: completed\ndata: {"status": "success"}\nid: 7\n\n')
    assert events == [ServerSentEvent("completed", '{"status": "success"}', "7")]


def test_default_type_is_message_and_data_lines_join_with_newlines() -> None:
    assert parse("data: a\ndata:b\ndata\n\n") == [ServerSentEvent("message", "a\nb\n")]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending(newline: str) -> None:
    text = f"event: won{newline}data: x{newline}{newline}"
    assert parse(text) == [ServerSentEvent("won", "x")]


def test_chunks_split_anywhere_even_inside_crlf() -> None:
    text = 'event: snapshot\r\ndata: {"a": 1}\r\n\r\nevent: completed\r\ndata: 2\r\n\r\n'
    expected = [ServerSentEvent("snapshot", '{"a": 1}'), ServerSentEvent("completed", "2")]
    for size in range(1, len(text) + 1):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert parse(*chunks) == expected, size
    # a CR at the end of one chunk and the LF at the start of the next is one line end
    assert parse("data: x\r", "\n\r", "\n") == [ServerSentEvent("message", "x")]


def test_comments_and_keep_alives_dispatch_nothing() -> None:
    assert parse(": keep-alive\n\n: keep-alive\n\n") == []
    assert parse(": keep-alive\ndata: x\n: more\n\n") == [ServerSentEvent("message", "x")]


def test_only_one_space_after_the_colon_is_dropped_and_values_may_hold_colons() -> None:
    assert parse("data:  two spaces\n\n")[0].data == " two spaces"
    assert parse('data: {"url": "http://x"}\n\n')[0].data == '{"url": "http://x"}'


def test_event_without_data_is_not_dispatched_and_its_type_resets() -> None:
    assert parse("event: queued\n\ndata: x\n\n") == [ServerSentEvent("message", "x")]


def test_incomplete_event_waits_for_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed("event: completed\ndata: x\n") == []
    assert parser.feed("\n") == [ServerSentEvent("completed", "x")]


def test_leading_bom_unknown_fields_id_and_retry_rules() -> None:
    parser = SSEParser()
    events = parser.feed("\ufeffdata: a\nfoo: bar\nid: 1\nretry: 1500\n\n")
    assert events == [ServerSentEvent("message", "a", "1", 1500)]
    assert parser.feed("id: bad\0id\nretry: 2s\ndata: b\n\n") == [ServerSentEvent("message", "b", "1", 1500)]
    assert parser.last_event_id == "1" and parser.retry_ms == 1500
    # a BOM only counts at the very start of the stream
    assert parser.feed("\ufeffdata: c\n\n") == []
