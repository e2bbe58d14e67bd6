"""Threads, shutdown, contexts, log hygiene."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import settled, start_with_stream
from .ofrep_server import OFREPTestServer, Scripted, refetch, wait_until


def _threads() -> set[int | None]:
    # The SDK's event-handler pool starts threads lazily and keeps them: not ours.
    return {
        t.ident for t in threading.enumerate() if not t.name.startswith("openfeature-event-handler")
    }


def test_shutdown_closes_everything_and_thread_count_returns_to_baseline(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    baseline = _threads()
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider, poll_interval_s=0.05)
    assert len(_threads()) == len(baseline) + 1
    api.clear_providers()  # the SDK calls provider.shutdown(), which waits for the thread
    assert _threads() == baseline
    wait_until(lambda: server.sse_connected == 0, what="stream closed by shutdown")
    count = len(server.all_requests())
    time.sleep(0.3)
    assert len(server.all_requests()) == count
    provider.shutdown()  # idempotent


def test_shutdown_is_bounded_while_the_server_hangs(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    baseline = _threads()
    server.set_flag("a", 1)
    # The fetch would hang for its whole 60 s timeout; shutdown may take 1 s.
    provider = make_provider(server.url, shutdown_timeout_s=1.0, timeout_ms=60_000)
    api.set_provider_and_wait(provider)
    server.hold_fetches()
    provider.set_context(EvaluationContext("stuck"))
    wait_until(lambda: server.in_flight == 1)
    stopper = threading.Thread(target=provider.shutdown)
    stopper.start()
    stopper.join(15.0)  # generous; an unbounded shutdown waits for the hung fetch
    assert not stopper.is_alive()
    assert _threads() == baseline


def test_the_provider_can_be_initialized_again_after_shutdown(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    # Without the persisted entry (ADR-0009), which would be served first: see test_cache.
    provider = make_provider(server.url, cache_mode="disabled")
    provider.initialize(EvaluationContext())
    provider.shutdown()
    server.set_flag("a", 2)
    provider.initialize(EvaluationContext())
    assert provider.resolve_integer_details("a", 0).value == 2
    assert provider.stats()["fetches"] == 2


def test_follows_the_global_context(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider], events: EventLog
) -> None:
    server.set_flag("static", True)
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", "anon"), "reason": "STATIC"}
    }
    api.set_evaluation_context(EvaluationContext("alice"))
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_string_value("who", "") == "alice"
    assert server.bulk_requests()[0].json == {"context": {"targetingKey": "alice"}}

    api.set_evaluation_context(EvaluationContext("bob", {"plan": "pro"}))
    wait_until(lambda: client.get_string_value("who", "") == "bob", what="new context served")
    changed = server.bulk_requests()[-1]
    assert changed.json == {"context": {"plan": "pro", "targetingKey": "bob"}}
    assert "If-None-Match" not in changed.headers  # the ETag belonged to alice
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1)
    assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == ["who"]

    count = len(server.bulk_requests())
    api.set_evaluation_context(EvaluationContext("bob", {"plan": "pro"}))  # equal content
    client.get_string_value("who", "")
    time.sleep(0.2)
    assert len(server.bulk_requests()) == count
    assert provider.stats()["context_changes"] == 1


def test_explicit_context_and_set_context(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", "anon"), "reason": "STATIC"}
    }
    api.set_evaluation_context(EvaluationContext("global-user"))
    provider = make_provider(server.url, context=EvaluationContext("carol"))
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_string_value("who", "") == "carol"  # explicit beats global

    assert provider.set_context(EvaluationContext("dave")).result(5) is True
    assert client.get_string_value("who", "") == "dave"
    assert "If-None-Match" not in server.bulk_requests()[-1].headers
    # After set_context, global changes are no longer followed.
    api.set_evaluation_context(EvaluationContext("erin"))
    client.get_string_value("who", "")
    time.sleep(0.2)
    assert client.get_string_value("who", "") == "dave"


def test_context_change_drops_the_etag_even_when_its_fetch_fails(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    # Flag "a" does not depend on the context, so this server's ETag is the same for
    # both contexts, as with servers that hash only their flag configuration.
    provider = make_provider(
        server.url,
        change_detection="polling",
        poll_interval_s=0.05,
        retry_min_s=0.3,
        retry_max_s=0.3,
    )
    api.set_provider_and_wait(provider)
    wait_until(lambda: provider.stats()["fetch_not_modified"] >= 1)
    old_etag = server.bulk_requests()[-1].headers["If-None-Match"]
    server.script.append(Scripted(500))
    first = len(server.bulk_requests())
    assert provider.set_context(EvaluationContext("new")).result(5) is False
    # Polls keep coming while the retry waits; none may offer the old context's ETag
    # (it would get a 304 and the old context's values would pass for the new one's).
    wait_until(lambda: provider.stats()["fetch_ok"] == 2, what="a 200 for the new context")
    # From the switch's own fetch on (a poll for the old context may have been on its
    # way already: its answer is discarded), every request is the new context's, and
    # until the new context's first 200 (the second request: the first got the 500)
    # none offers an ETag. After it, the new context's own ETag is the same string.
    new = {"context": {"targetingKey": "new"}}
    requests = server.bulk_requests()[first:]
    after = requests[next(i for i, r in enumerate(requests) if r.json == new) :]
    assert all(r.json == new for r in after)
    failed, answered = after[:2]
    assert "If-None-Match" not in failed.headers and "If-None-Match" not in answered.headers
    assert old_etag


def test_a_context_change_during_a_fetch_is_not_downgraded_by_later_events(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider, _ = start_with_stream(server, make_provider)
    first = len(server.bulk_requests())
    server.hold_fetches()
    server.push(refetch(etag="e0"))
    wait_until(lambda: server.in_flight == 1)
    provider.set_context(EvaluationContext("new"))
    server.push(refetch(etag="e1"))
    wait_until(lambda: provider.stats()["sse_refetch_events"] == 2)
    server.release_fetches()
    assert settled(provider, server) == first + 2
    follow_up = server.bulk_requests()[-1]
    # One follow-up for both triggers, and it is the context change's: no ETag, no
    # flagConfig* parameters.
    assert follow_up.query == {}
    assert "If-None-Match" not in follow_up.headers
    assert follow_up.json == {"context": {"targetingKey": "new"}}


def test_answer_for_a_superseded_context_is_discarded(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", "anon"), "reason": "STATIC"}
    }
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    server.hold_fetches()
    first = provider.set_context(EvaluationContext("old"))
    wait_until(lambda: server.in_flight == 1)
    second = provider.set_context(EvaluationContext("new"))
    server.release_fetches()
    assert second.result(5) is True
    assert first.result(5) is False
    assert provider.resolve_string_details("who", "").value == "new"
    assert provider.stats()["fetch_discarded_old_context"] == 1
    assert len(server.bulk_requests()) == 3


def test_on_context_changed_callback(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", "anon"), "reason": "STATIC"}
    }
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    assert provider.resolve_string_details("who", "").value == "anon"
    fetched = len(server.bulk_requests())
    provider.on_context_changed(EvaluationContext(), EvaluationContext("zoe", {"plan": "pro"}))
    wait_until(lambda: provider.resolve_string_details("who", "").value == "zoe")
    # The callback re-fetched once, with the new context as the request's body.
    requests = server.bulk_requests()
    assert len(requests) == fetched + 1
    assert requests[-1].json == {"context": {"targetingKey": "zoe", "plan": "pro"}}


async def test_works_inside_an_asyncio_application(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", True)
    server.event_streams = [server.sse_here()]
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)  # blocks this loop briefly; I/O is on the provider's
    client = api.get_client()
    assert await client.get_boolean_value_async("a", False) is True
    server.set_flag("a", False)
    wait_until(lambda: server.sse_connected == 1)
    server.push(refetch())
    deadline = time.monotonic() + 5
    while await client.get_boolean_value_async("a", True):
        assert time.monotonic() < deadline
        import asyncio

        await asyncio.sleep(0.01)


def test_logs_name_a_stream_by_its_origin_only_and_carry_no_header_values(
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval.ofrep")
    server.set_flag("a", 1)
    for _ in range(5):
        server.sse_script.append(Scripted(500))
    server.event_streams = [server.sse_here("secret", query="token=TOPSECRET")]
    provider = make_provider(server.url, headers={"Authorization": "Bearer HEADERSECRET"})
    api.set_provider_and_wait(provider)
    wait_until(lambda: provider.stats()["sse_connect_failures"] >= 2)
    server.script.append(Scripted(500, b'{"errorDetails": "nope"}'))
    server.drop_streams()
    wait_until(lambda: provider.stats()["fetch_status_5xx"] == 1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert f"event stream at {server.url} " in text  # the stream is named by its origin...
    assert "/sse/secret" not in text and "TOPSECRET" not in text  # ...not its path or query
    assert "HEADERSECRET" not in text
    assert "HTTP 500" in text


def test_resolve_path_takes_no_lock_and_does_no_io(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    """Resolves keep answering while the loop thread is stuck in a hanging fetch."""
    server.set_flag("a", 1)
    provider = make_provider(server.url, timeout_ms=60_000)
    api.set_provider_and_wait(provider)
    server.hold_fetches()
    provider.set_context(EvaluationContext("x"))
    wait_until(lambda: server.in_flight == 1)  # the loop waits on it for up to 60 s
    client = api.get_client()
    answers: list[int] = []

    def resolve() -> None:
        answers.extend(client.get_integer_value("a", 0) for _ in range(1000))

    resolver = threading.Thread(target=resolve)
    resolver.start()
    resolver.join(15.0)  # generous; resolves waiting on the loop would wait 60 s
    assert not resolver.is_alive()
    assert answers == [1] * 1000
    server.release_fetches()
    settled(provider, server)


def test_stats_is_a_snapshot(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("a", 1)
    provider = make_provider(server.url)
    api.set_provider_and_wait(provider)
    stats: dict[str, Any] = provider.stats()
    stats["fetches"] = 999
    assert provider.stats()["fetches"] == 1
