"""No configured header value in any log line, exception, event or file, whatever the
server echoes; stream URLs neither persisted nor logged beyond their origin; and a URL
with credentials beside an Authorization header refused at construction."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderFatalError

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import entry_file
from .ofrep_server import OFREPTestServer, Scripted, wait_until

TOKEN = "tok-0123456789abcdef"
KEY = "key-fedcba9876543210"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-API-Key": KEY}


def echo(status: int, field: str) -> Scripted:
    """An answer whose text repeats the request's credentials, whole and in parts."""
    text = f"{HEADERS['Authorization']}: configuration rejected (key {KEY}, token {TOKEN})"
    body = {"errorCode": "INVALID_CONTEXT", field: text}
    return Scripted(status, json.dumps(body).encode(), {"Content-Type": "application/json"})


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and KEY not in text, text


def test_a_400_echoing_the_credentials_never_puts_them_in_a_log_an_exception_or_an_event(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval")
    server.script.append(echo(400, "errorDetails"))
    provider = make_provider(server.url, headers=HEADERS)
    with pytest.raises(ProviderFatalError) as raised:
        api.set_provider_and_wait(provider)
    assert "INVALID_CONTEXT" in str(raised.value)  # the server's words, less the secrets
    assert "configuration rejected" in str(raised.value)
    # The SDK runs handlers on a thread pool of its own: the event may come later.
    wait_until(lambda: events.of(ProviderEvent.PROVIDER_ERROR) != [], what="ERROR event")
    messages = [d.message or "" for d in events.of(ProviderEvent.PROVIDER_ERROR)]
    assert_no_secret(str(raised.value), caplog.text, *messages)


@pytest.mark.parametrize(("status", "field"), [(500, "errorDetails"), (422, "detail")])
def test_failures_echoing_the_credentials_are_logged_without_them(
    status: int,
    field: str,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval")
    server.set_flag("f", 1)
    provider = make_provider(server.url, headers=HEADERS, change_detection="none")
    provider.initialize(EvaluationContext())
    server.script.append(echo(status, field))
    provider.set_context(EvaluationContext("bob"))
    wait_until(lambda: "configuration rejected" in caplog.text, what="the failure logged")
    assert_no_secret(caplog.text)


def test_a_token_in_a_stream_url_path_is_neither_persisted_nor_logged(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval")
    server.set_flag("f", 1)
    server.event_streams = [server.sse_here("PATH-TOKEN-5150", query="QUERY-TOKEN=7")]
    server.sse_script.extend([Scripted(503)] * 3)  # each failure is logged
    provider = make_provider(server.url, cache_dir=tmp_path)
    api.set_provider_and_wait(provider)
    wait_until(lambda: provider.stats()["sse_connect_failures"] >= 1, what="a failed connect")
    wait_until(lambda: provider.stats()["cache_writes"] >= 1, what="entry written")
    written = entry_file(tmp_path).read_text()
    for secret in ("PATH-TOKEN-5150", "QUERY-TOKEN", "/sse/"):
        assert secret not in written
        assert secret not in caplog.text
    assert server.url in caplog.text  # the stream is still named, by its origin


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer x"}, {"authorization": "Basic eDp5"}]
)
def test_a_base_url_with_credentials_beside_an_authorization_header_is_refused(
    headers: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match="credentials") as raised:
        OFREPProvider(base_url="https://user:pa55word@flags.example.com", headers=headers)
    assert "pa55word" not in str(raised.value)
    for value in headers.values():
        assert value not in str(raised.value)
    # Either alone is fine.
    OFREPProvider(base_url="https://user:pa55word@flags.example.com")
    OFREPProvider(base_url="https://flags.example.com", headers=headers)


def test_the_same_conflict_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFREP_ENDPOINT", "https://user:pa55word@flags.example.com")
    monkeypatch.setenv("OFREP_HEADERS", "Authorization=Bearer%20x")
    with pytest.raises(ValueError, match="credentials") as raised:
        OFREPProvider()
    assert "pa55word" not in str(raised.value) and "Bearer x" not in str(raised.value)


def test_the_scrubber_hides_each_value_its_parts_and_basic_credentials_decoded() -> None:
    from flageval.ofrep._headers import Scrubber

    basic = "Basic " + base64.b64encode(b"svc-user:hunter2!").decode()
    scrub = Scrubber(["Bearer tok-0123456789", basic, "ab"])
    assert scrub("x Bearer tok-0123456789 y") == "x <redacted> y"
    assert scrub("token tok-0123456789 expired") == "token <redacted> expired"
    assert scrub(f"got {basic}") == "got <redacted>"
    assert scrub("user svc-user, password hunter2!") == "user <redacted>, password <redacted>"
    assert scrub("ab cd Basic") == "ab cd Basic"  # too short to be told from plain words
    assert Scrubber([])("anything") == "anything"
