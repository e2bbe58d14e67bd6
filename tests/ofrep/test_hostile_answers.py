"""No server answer can exhaust, storm or freeze the provider."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode

from flageval.ofrep import OFREPProvider
from flageval.ofrep._bulk import MAX_JSON_ELEMENTS

from .conftest import EventLog
from .helpers import assert_backs_off, settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, sse_event, wait_until
from .raw_server import RawRequest, RawServer, response

JSON = {"Content-Type": "application/json"}


def test_an_answer_past_the_element_budget_is_refused_and_the_last_values_stay(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider = make_provider(server.url, change_detection="none")
    provider.initialize(EvaluationContext())
    # Valid JSON, 3.6 MB: the shape of the 11-million-array answer, past the budget.
    arrays = MAX_JSON_ELEMENTS + 1000
    body = b'{"flags":[{"key":"f","value":2}],"x":[' + b"[]," * arrays + b"[]]}"
    server.script.append(Scripted(200, body, JSON))
    assert provider.set_context(EvaluationContext("bob")).result(10) is False
    assert provider.stats()["fetch_too_complex"] == 1
    assert provider.resolve_integer_details("f", 0).value == 1  # the last good answer
    # An answer within the budget is taken.
    assert provider.set_context(EvaluationContext("carl")).result(10) is True
    assert provider.stats()["fetch_too_complex"] == 1


def test_a_large_answer_within_the_budget_is_taken(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # 20,000 flags with metadata: about 10 elements each, well within the budget.
    for i in range(20_000):
        server.set_flag(f"f{i}", i, "v", metadata={"flagSetId": "s", "version": 3})
    provider = make_provider(server.url, change_detection="none")
    provider.initialize(EvaluationContext())
    assert provider.resolve_integer_details("f19999", 0).value == 19_999


class BadETagServer:
    """A bulk endpoint whose ETag holds a control character; flags change on demand."""

    def __init__(self, etag: str) -> None:
        self.value = 1
        self.etag = etag
        self.raw = RawServer(self._answer)

    def _answer(self, request: RawRequest) -> bytes:
        body = json.dumps({"flags": [{"key": "f", "value": self.value}]}).encode()
        return response(200, body, {**JSON, "ETag": self.etag})


@pytest.fixture
def bad_etag_server() -> Iterator[BadETagServer]:
    srv = BadETagServer('"a\x01b"')
    srv.raw.start()
    yield srv
    srv.raw.stop()


def test_an_unsendable_etag_is_dropped_and_counted_so_requests_still_leave(
    bad_etag_server: BadETagServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    provider = make_provider(
        bad_etag_server.raw.url, change_detection="polling", poll_interval_s=0.05
    )
    provider.initialize(EvaluationContext())
    bad_etag_server.value = 2
    wait_until(lambda: provider.resolve_integer_details("f", 0).value == 2, what="change seen")
    requests = bad_etag_server.raw.recorded()
    assert len(requests) >= 2
    assert all("if-none-match" not in r.headers for r in requests)
    stats = provider.stats()
    assert stats["etag_unsendable"] >= 2 and stats["fetch_internal_error"] == 0


def test_an_sse_id_that_cannot_be_sent_back_is_not_sent_and_reconnects_still_work(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider, _ = start_with_stream(server, make_provider)
    server.push(sse_event({"type": "other"}, id="bad\x01id"))
    wait_until(lambda: provider.stats()["sse_events"] == 1, what="event read")
    server.drop_streams()
    wait_until(lambda: len(server.sse_requests()) == 2, what="reconnected")
    wait_until(lambda: server.sse_connected == 1, what="reconnected for good")
    assert "Last-Event-ID" not in server.sse_requests()[1].headers
    assert provider.stats()["sse_id_unsendable"] == 1
    # A good id afterwards is sent again.
    server.push(sse_event({"type": "other"}, id="good-7"))
    wait_until(lambda: provider.stats()["sse_events"] == 2, what="second event read")
    server.drop_streams()
    wait_until(lambda: len(server.sse_requests()) == 3, what="reconnected again")
    assert server.sse_requests()[2].headers.get("Last-Event-ID") == "good-7"


@pytest.mark.parametrize("retry_after", ["0", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_a_zero_or_past_retry_after_cannot_storm_the_server(
    retry_after: str, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider = make_provider(server.url, change_detection="none")
    provider.initialize(EvaluationContext())
    server.script.extend([Scripted(429, headers={"Retry-After": retry_after})] * 1000)
    first = len(server.all_requests())
    provider.set_context(EvaluationContext("bob"))
    wait_until(lambda: len(server.all_requests()) >= first + 6, what="six attempts")
    # Each wait is at least the error backoff (FAST: upper half of 0.05 doubling to 0.2):
    # >= 0.025, 0.05, 0.1, then 0.1 each, whatever the server says.
    assert_backs_off([r.t for r in server.all_requests()[first : first + 6]], 0.05, 0.2)
    server.script.clear()


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no string form")


def cyclic() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize("bad", [Unprintable, cyclic], ids=["str-raises", "cyclic-list"])
def test_a_global_context_that_cannot_be_encoded_fails_visibly(
    bad: Callable[[], object],
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    caplog.set_level(logging.WARNING, logger="flageval.ofrep")
    api.set_evaluation_context(EvaluationContext("ann"))
    provider = make_provider(server.url, change_detection="none")
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_string_value("who", "") == "ann"
    before = len(server.bulk_requests())

    api.set_evaluation_context(EvaluationContext("bob", {"attr": bad()}))  # type: ignore[dict-item]
    details = client.get_string_details("who", "default")
    # Never ann's value for bob's context: an error, from the first resolve on.
    assert details.value == "default"
    assert details.error_code == ErrorCode.INVALID_CONTEXT
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="error event")
    assert events.of(ProviderEvent.PROVIDER_ERROR)[0].error_code == ErrorCode.INVALID_CONTEXT
    assert "cannot be encoded" in caplog.text
    time.sleep(0.1)
    assert len(server.bulk_requests()) == before  # nothing sent for it

    # A context that can be encoded brings the provider back.
    api.set_evaluation_context(EvaluationContext("carl"))
    wait_until(lambda: client.get_string_value("who", "") == "carl", what="recovered")
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_READY)) >= 2, what="READY again")
    settled(provider, server)


def test_initialize_with_a_context_that_cannot_be_encoded_raises_and_errors_on_resolve(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    from openfeature.exception import GeneralError

    server.set_flag("f", True)
    provider = make_provider(server.url, change_detection="none")
    # The global context, as the SDK passes it to initialize(): a resolve that found
    # another one there would switch to it (and fetch for it).
    bad = EvaluationContext("x", {"attr": Unprintable()})  # type: ignore[dict-item]
    api.set_evaluation_context(bad)
    with pytest.raises(GeneralError, match="cannot be encoded"):
        provider.initialize(bad)
    assert provider.resolve_boolean_details("f", False).error_code == ErrorCode.INVALID_CONTEXT
    assert server.bulk_requests() == []
    assert provider.set_context(EvaluationContext("y")).result(5) is True
    assert provider.resolve_boolean_details("f", False).value is True


def test_a_refetch_event_with_an_unsendable_etag_still_refetches(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider, _ = start_with_stream(server, make_provider)
    server.set_flag("f", 2)
    server.push(refetch(etag="x" * 5000))  # a URL this long is refused by servers (414)
    wait_until(lambda: provider.resolve_integer_details("f", 0).value == 2, what="refetched")
    assert "flagConfigEtag" not in server.bulk_requests()[-1].query
