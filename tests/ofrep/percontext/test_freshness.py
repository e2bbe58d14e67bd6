"""Per-context entries kept fresh per server: a change on the stream revalidates the
recently used contexts (their own ETags, coalesced, bounded), a stale entry is served
while it is revalidated, failures keep every context's last good answer, and a 429
holds every request."""

from __future__ import annotations

import time
from collections.abc import Callable

from openfeature.exception import ErrorCode

from flageval.ofrep import OFREPProvider
from tests.ofrep.helpers import DOWN, start_with_stream
from tests.ofrep.ofrep_server import OFREPTestServer, Scripted, refetch, wait_until

from ._users import Users

MakeProvider = Callable[..., OFREPProvider]


def test_a_change_on_the_stream_revalidates_recent_contexts_with_their_own_etags(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider, client = start_with_stream(server, make_provider)
    for u in ("a", "b", "c"):
        assert client.get_string_value("who", "", users.context(u)) == f"{u}|free|1"
    first = {u: len(users.bodies_for(u)) for u in ("a", "b", "c")}
    etags = {
        u: next(r for r in reversed(server.bulk_requests()) if f'"{u}"' in r.body.decode())
        for u in ("a", "b", "c")
    }
    assert all(first[u] == 1 for u in first) and etags
    users.version = 2
    server.push(refetch(etag="cfg-2"))
    # No evaluation meanwhile: each recently used context is fetched again by itself.
    wait_until(lambda: all(len(users.bodies_for(u)) == 2 for u in "abc"), what="revalidated")
    for u in "abc":
        request = [r for r in server.bulk_requests() if f'"{u}"' in r.body.decode()][-1]
        assert request.headers.get("If-None-Match", "").startswith('"')
        assert request.query == {"flagConfigEtag": "cfg-2"}
    wait_until(lambda: provider.stats()["context_fetch_ok"] == 6, what="answers applied")
    for u in "abc":
        assert client.get_string_value("who", "", users.context(u)) == f"{u}|free|2"
    assert provider.stats()["context_wait_timeouts"] == 0


def test_unchanged_answers_revalidate_as_304s_and_in_at_most_the_bound_at_once(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider, client = start_with_stream(server, make_provider, context_max_requests=2)
    for n in range(10):
        client.get_string_value("who", "", users.context(f"u{n}"))
    server.hold_fetches()
    server.push(refetch(etag="same"))
    wait_until(lambda: server.in_flight == 3, what="2 revalidations and the provider's own")
    time.sleep(0.1)  # an observation window, not a barrier: nothing more may start
    assert server.in_flight == 3
    server.release_fetches()
    wait_until(lambda: provider.stats()["context_not_modified"] == 10, what="ten 304s")
    assert provider.stats()["context_fetch_ok"] == 10  # the first fetches only


def test_a_stale_entry_is_served_at_once_while_it_is_revalidated(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider, client = start_with_stream(server, make_provider, context_recent_s=0.01)
    assert client.get_string_value("who", "", users.context("s")) == "s|free|1"
    time.sleep(0.02)  # older than context_recent_s: revalidated on its next use only
    users.version = 2
    server.hold_fetches()
    server.push(refetch(etag="v2"))
    wait_until(lambda: server.in_flight == 1, what="the provider's own fetch held")
    before = len(users.bodies_for("s"))
    details = client.get_string_details("who", "", users.context("s"))
    assert (details.value, details.error_code) == ("s|free|1", None)  # stale, at once
    wait_until(lambda: len(users.bodies_for("s")) == before + 1, what="revalidation sent")
    server.release_fetches()
    wait_until(
        lambda: client.get_string_value("who", "", users.context("s")) == "s|free|2",
        what="new value",
    )
    assert provider.stats()["context_wait_timeouts"] == 0


def test_failures_keep_each_contexts_last_good_answer(
    make_provider: MakeProvider,
) -> None:
    server = OFREPTestServer().start()
    users = Users(server)
    provider, client = start_with_stream(server, make_provider)
    for u in "abcd":
        assert client.get_string_value("who", "", users.context(u)) == f"{u}|free|1"
    server.script.extend([DOWN] * 50)
    users.version = 2
    server.push(refetch(etag="v2"))
    wait_until(lambda: provider.stats()["context_fetch_failed"] >= 1, what="a 500")
    for _ in range(20):
        for u in "abcd":
            details = client.get_string_details("who", "", users.context(u))
            assert (details.value, details.error_code) == (f"{u}|free|1", None)
    server.stop()  # down: connections refused
    for u in "abcd":
        details = client.get_string_details("who", "", users.context(u))
        assert (details.value, details.error_code) == (f"{u}|free|1", None)
    # A context never fetched has nothing to keep: the default, with GENERAL.
    details = client.get_string_details("who", "default", users.context("new"))
    assert (details.value, details.error_code) == ("default", ErrorCode.GENERAL)


def test_a_429_holds_every_request_for_its_retry_after(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider, client = start_with_stream(server, make_provider, context_wait_s=5.0)
    assert client.get_string_value("who", "", users.context("a")) == "a|free|1"
    server.script.extend([Scripted(429, headers={"Retry-After": "1"})] * 2)
    sent = len(server.bulk_requests())
    server.push(refetch(etag="v2"))
    # Both 429s received (the gate closes in the same loop callback that counts them).
    wait_until(
        lambda: (
            provider.stats()["fetch_rate_limited"] + provider.stats()["context_rate_limited"] == 2
        ),
        what="both 429s received",
    )
    limited_at = max(r.t for r in server.bulk_requests()[sent : sent + 2])
    # A new context now: its fetch waits for the gate, then it is answered.
    assert client.get_string_value("who", "", users.context("late")) == "late|free|1"
    (late,) = [r for r in server.bulk_requests() if '"late"' in r.body.decode()]
    assert late.t >= limited_at + 0.99  # the gate closed when the 429 came back
    stats = provider.stats()
    assert stats["fetch_rate_limited"] + stats["context_rate_limited"] == 2
