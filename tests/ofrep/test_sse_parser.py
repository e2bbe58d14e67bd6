"""The SSE reader against each WHATWG parsing rule, chunk boundaries included."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flageval.ofrep._sse import SSEEvent, SSEParser, SSEProtocolError, pump


def parse(*chunks: bytes, parser: SSEParser | None = None) -> list[SSEEvent]:
    p = parser or SSEParser()
    out: list[SSEEvent] = []
    for chunk in chunks:
        out.extend(p.feed(chunk))
    return out


def test_single_event_defaults_to_message_type() -> None:
    assert parse(b"data: hello\n\n") == [SSEEvent("message", "hello", "")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending(eol: bytes) -> None:
    stream = b"event: x" + eol + b"data: a" + eol + b"data: b" + eol + eol
    assert parse(stream) == [SSEEvent("x", "a\nb", "")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    # Were the LF read as a line of its own, the empty line would dispatch "a" alone.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [SSEEvent("message", "a\nb", "")]
    events = parse(b"data: a\r", b"\n\r", b"\ndata: b\r", b"\n", b"\r\n")
    assert events == [SSEEvent("message", "a", ""), SSEEvent("message", "b", "")]


def test_lone_cr_at_chunk_end_then_data_is_a_line_end() -> None:
    assert parse(b"data: a\r", b"\r") == [SSEEvent("message", "a", "")]


def test_multiline_data_joined_with_lf_and_no_trailing_lf() -> None:
    assert parse(b"data: 1\ndata: 2\ndata: 3\n\n")[0].data == "1\n2\n3"


def test_only_one_leading_space_is_stripped() -> None:
    assert parse(b"data:  two spaces\n\n")[0].data == " two spaces"
    assert parse(b"data:none\n\n")[0].data == "none"


def test_field_without_colon_has_empty_value() -> None:
    # "data" alone appends an empty line: the event is dispatched with data "".
    assert parse(b"data\n\n") == [SSEEvent("message", "", "")]
    assert parse(b"data\ndata\n\n")[0].data == "\n"


def test_comment_lines_are_ignored_and_do_not_dispatch() -> None:
    assert parse(b": keep-alive\n\n: another\n\n") == []
    assert parse(b"data: a\n: comment in the middle\ndata: b\n\n")[0].data == "a\nb"


def test_event_without_data_is_not_dispatched_and_type_resets() -> None:
    assert parse(b"event: lonely\n\ndata: x\n\n") == [SSEEvent("message", "x", "")]


def test_id_persists_across_events_and_empty_id_clears() -> None:
    p = SSEParser()
    first = parse(b"id: 7\ndata: a\n\n", parser=p)
    second = parse(b"data: b\n\n", parser=p)
    third = parse(b"id\ndata: c\n\n", parser=p)
    assert [e.last_event_id for e in first + second + third] == ["7", "7", ""]


def test_id_with_nul_is_ignored() -> None:
    p = SSEParser(last_event_id="keep")
    assert parse(b"id: a\x00b\ndata: x\n\n", parser=p)[0].last_event_id == "keep"


def test_id_without_data_still_sets_last_event_id() -> None:
    p = SSEParser()
    parse(b"id: 42\n\n", parser=p)
    assert p.last_event_id == "42"


def test_retry_accepts_only_ascii_digits() -> None:
    p = SSEParser()
    parse(b"retry: 2500\n\n", parser=p)
    assert p.retry_ms == 2500
    parse(b"retry: 12a\n\nretry: -5\n\nretry: \xd9\xa3\n\nretry:\n\n", parser=p)
    assert p.retry_ms == 2500


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: bar\ndata: x\n\n") == [SSEEvent("message", "x", "")]


def test_colon_splits_at_the_first_colon_only() -> None:
    assert parse(b'data: {"a": "b:c"}\n\n')[0].data == '{"a": "b:c"}'


def test_leading_bom_is_dropped_once_even_when_split() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [SSEEvent("message", "x", "")]
    # A second BOM is data, not a marker: "\ufeffdata" is an unknown field.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n") == []


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert parse(b"data: \xff\n\n")[0].data == "\ufffd"


def test_unfinished_event_at_end_of_stream_is_not_dispatched() -> None:
    assert parse(b"data: never finished\n") == []


def test_overlong_line_is_refused() -> None:
    p = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEProtocolError):
        p.feed(b"data: " + b"x" * 100)


def test_overlong_event_data_is_refused() -> None:
    p = SSEParser(max_event_bytes=64)
    with pytest.raises(SSEProtocolError):
        p.feed(b"data: 0123456789\n" * 10)


@given(
    events=st.lists(
        st.tuples(
            st.text(
                st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
                max_size=20,
            ),
            st.lists(
                st.text(
                    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                    max_size=20,
                ),
                min_size=1,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=5,
    ),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_chunking_gives_the_same_events(
    events: list[tuple[str, list[str]]], eol: str, cuts: list[int]
) -> None:
    text = "".join(
        f"id:{i}{eol}" + "".join(f"data: {line}{eol}" for line in data) + eol for i, data in events
    )
    raw = text.encode()
    whole = parse(raw)
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert parse(*pieces) == whole
    assert [e.data for e in whole] == ["\n".join(data) for _, data in events]


class _Chunks:
    def __init__(self, chunks: list[bytes], stall: bool = False) -> None:
        self._chunks = list(chunks)
        self._stall = stall
        self.reads = 0

    async def readany(self) -> bytes:
        self.reads += 1
        if self._chunks:
            return self._chunks.pop(0)
        if self._stall:
            await asyncio.sleep(10)
        return b""


async def test_pump_delivers_events_and_returns_at_end_of_stream() -> None:
    seen: list[SSEEvent] = []
    source = _Chunks([b"data: a\n", b"\n: ping\n"])
    await pump(source, SSEParser(), 1.0, seen.append)
    assert seen == [SSEEvent("message", "a", "")]
    assert source.reads == 3  # both chunks, then the end of the stream


async def test_pump_times_out_when_the_stream_goes_silent() -> None:
    with pytest.raises(TimeoutError):
        await pump(_Chunks([b": ping\n"], stall=True), SSEParser(), 0.05, lambda e: None)
