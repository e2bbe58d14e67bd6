"""Pure pieces of the bulk fetch: Retry-After forms, query encoding, eventStreams entries,
trigger merging, the canonical context body."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from openfeature.evaluation_context import EvaluationContext
from yarl import URL

from flageval._common import parse_retry_after
from flageval.ofrep._bulk import Failed, Fetched, parse_bulk, same_origin
from flageval.ofrep._config import load_config
from flageval.ofrep._context import encode_context
from flageval.ofrep._fetch import MAX_RETRY_AFTER_S, FetchRequest, bulk_url

NOW = 1_700_000_000.0


def _config(base: str = "http://127.0.0.1:8080/base"):  # type: ignore[no-untyped-def]
    return load_config(
        base_url=base,
        headers=None,
        timeout_ms=1000,
        change_detection="sse",
        poll_interval_s=0,
        inactivity_delay_s=None,
        sse_read_timeout_s=60,
        reconnect_min_s=1,
        reconnect_max_s=2,
        retry_min_s=1,
        retry_max_s=2,
        stale_after_s=30,
        shutdown_timeout_s=5,
        environ={},
    )


def test_retry_after_delta_seconds() -> None:
    assert parse_retry_after("7", MAX_RETRY_AFTER_S, NOW) == 7.0
    assert parse_retry_after(" 0 ", MAX_RETRY_AFTER_S, NOW) == 0.0


def test_retry_after_http_date() -> None:
    header = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(header, MAX_RETRY_AFTER_S, NOW) == pytest.approx(30.0)


def test_retry_after_iso8601_like_the_ofrep_example() -> None:
    when = datetime.fromtimestamp(NOW + 12, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_retry_after(when, MAX_RETRY_AFTER_S, NOW) == pytest.approx(12.0)
    with_offset = datetime.fromtimestamp(NOW + 12, tz=UTC).isoformat()
    assert parse_retry_after(with_offset, MAX_RETRY_AFTER_S, NOW) == pytest.approx(12.0)


def test_retry_after_in_the_past_is_zero_and_far_future_is_capped() -> None:
    assert (
        parse_retry_after(email.utils.formatdate(NOW - 100, usegmt=True), MAX_RETRY_AFTER_S, NOW)
        == 0.0
    )
    assert parse_retry_after("999999", MAX_RETRY_AFTER_S, NOW) == MAX_RETRY_AFTER_S


@pytest.mark.parametrize("bad", [None, "", "soon", "-3", "1.5", "2024-13-45T00:00:00Z"])
def test_retry_after_unreadable(bad: str | None) -> None:
    assert parse_retry_after(bad, MAX_RETRY_AFTER_S, NOW) is None


def test_flag_config_params_are_encoded_and_decode_verbatim() -> None:
    etag = 'W/"a+b c&d=e/%2F?#ü"'
    url = bulk_url(
        _config(), FetchRequest(flag_config_etag=etag, flag_config_last_modified="1771622898")
    )
    parts = urlsplit(str(url))
    assert parts.path == "/base/ofrep/v1/evaluate/flags"
    assert parse_qs(parts.query) == {
        "flagConfigEtag": [etag],
        "flagConfigLastModified": ["1771622898"],
    }
    assert "+" not in parts.query  # '+' would decode as a space on many servers


def test_no_params_without_event_metadata() -> None:
    assert URL(str(bulk_url(_config(), FetchRequest()))).query_string == ""


def test_merge_keeps_newest_metadata_and_unconditional_wins() -> None:
    a = FetchRequest(flag_config_etag="1")
    b = FetchRequest(flag_config_etag="2", flag_config_last_modified="t2")
    poll = FetchRequest()
    assert a.merge(b) == b
    assert b.merge(poll) == b  # a poll after an event keeps the event's metadata
    assert poll.merge(a) == a
    assert a.merge(FetchRequest(conditional=False)) == FetchRequest(conditional=False)
    assert FetchRequest(conditional=False).merge(b) == FetchRequest(conditional=False)


def test_context_body_is_canonical() -> None:
    one = EvaluationContext("u1", {"b": 1, "a": {"y": 2, "x": [1, 2]}})
    two = EvaluationContext("u1", {"a": {"x": [1, 2], "y": 2}, "b": 1})
    assert encode_context(one) == encode_context(two)
    assert encode_context(one) == b'{"context":{"a":{"x":[1,2],"y":2},"b":1,"targetingKey":"u1"}}'
    assert encode_context(EvaluationContext()) == b'{"context":{}}'
    assert encode_context(one) != encode_context(EvaluationContext("u2", one.attributes))


def test_context_datetimes_are_encoded() -> None:
    when = datetime(2024, 2, 7, 12, 0, tzinfo=UTC)
    assert b"2024-02-07T12:00:00Z" in encode_context(EvaluationContext(None, {"t": when}))


BASE = URL("http://127.0.0.1:8080/some/prefix")


def _streams(entries: list[object]) -> Fetched:
    import json

    body = json.dumps({"flags": [], "eventStreams": entries}).encode()
    result = parse_bulk(body, None, BASE)
    assert isinstance(result, Fetched)
    return result


def test_stream_url_and_endpoint_forms() -> None:
    result = _streams(
        [
            {"type": "sse", "url": "https://sse.example/stream?token=t", "inactivityDelaySec": 30},
            {"type": "sse", "endpoint": {"requestUri": "/events?channel=a"}},
            {
                "type": "sse",
                "endpoint": {"origin": "https://push.example:8443", "requestUri": "/e"},
            },
        ]
    )
    urls = [str(s.url) for s in result.streams]
    assert urls == [
        "https://sse.example/stream?token=t",
        # no origin: the base URL's origin only, its /some/prefix path is not prefixed
        "http://127.0.0.1:8080/events?channel=a",
        "https://push.example:8443/e",
    ]
    assert [s.inactivity_delay_s for s in result.streams] == [30.0, None, None]
    assert result.invalid_streams == 0


def test_unknown_stream_types_are_ignored_and_broken_entries_counted() -> None:
    result = _streams(
        [
            {"type": "websocket", "url": "wss://x"},
            {"type": "sse"},
            {"type": "sse", "url": "http://a/x", "endpoint": {"requestUri": "/y"}},
            {"type": "sse", "url": "mailto:someone"},
            {"type": "sse", "endpoint": {"origin": "http://a/path", "requestUri": "/y"}},
            "nonsense",
            {"type": "sse", "url": "http://127.0.0.1:8080/ok", "inactivityDelaySec": 0},
        ]
    )
    assert [str(s.url) for s in result.streams] == ["http://127.0.0.1:8080/ok"]
    assert result.streams[0].inactivity_delay_s is None
    assert result.invalid_streams == 5


def test_malformed_bodies() -> None:
    assert isinstance(parse_bulk(b"not json", None, BASE), Failed)
    assert isinstance(parse_bulk(b"[]", None, BASE), Failed)
    assert isinstance(parse_bulk(b'{"flags": {}}', None, BASE), Failed)
    partial = parse_bulk(b'{"flags": [{"key": "a", "value": 1}, {"value": 2}, 3]}', "e", BASE)
    assert isinstance(partial, Fetched)
    assert list(partial.entries) == ["a"]
    assert partial.invalid_items == 2
    assert partial.etag == "e"


def test_same_origin_compares_scheme_host_and_effective_port() -> None:
    assert same_origin(URL("http://Host:80/a"), URL("http://host/b?x"))
    assert not same_origin(URL("http://host/a"), URL("https://host/a"))
    assert not same_origin(URL("http://host:8080/a"), URL("http://host:8081/a"))
    assert not same_origin(URL("http://127.0.0.1/a"), URL("http://localhost/a"))
