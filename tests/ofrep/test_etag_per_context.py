"""A stored ETag belongs to one context: a switch drops it, and a fetch queued behind
the new context's first fetch goes out for the new context without the old context's
ETag, so a server whose ETag covers only its configuration cannot answer it 304 with
the old context's flags."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider
from flageval.ofrep._context import CurrentContext

from .helpers import DOWN, settled, start_with_stream
from .ofrep_server import OFREPTestServer, refetch, wait_until

ALICE = EvaluationContext("alice")
BOB = EvaluationContext("bob")


def test_a_fetch_pending_across_a_context_switch_never_carries_the_old_etag(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.etag_ignores_context = True  # the same ETag for alice and for bob
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx.get("targetingKey", ""), "reason": "STATIC"}
    }
    provider, _ = start_with_stream(server, make_provider, context=ALICE)
    assert server.bulk_requests()[-1].headers.get("If-None-Match")  # alice's ETag is held
    before = len(server.bulk_requests())

    server.hold_fetches()
    server.script.append(DOWN)  # bob's first fetch fails...
    switched = provider.set_context(BOB)
    wait_until(lambda: server.in_flight == 1, what="bob's fetch in flight")
    # ...while an event fetch is already queued behind it. An event's fetch that finds
    # another one queued merges into it and is counted: that is how the test knows.
    coalesced = provider.stats()["fetch_coalesced"]
    events = itertools.count(1)

    def queued() -> bool:
        server.push(refetch(etag=f"e{next(events)}"))
        return provider.stats()["fetch_coalesced"] > coalesced

    wait_until(queued, what="an event fetch queued behind bob's")
    server.release_fetches()

    wait_until(lambda: provider.resolve_string_details("who", "").value == "bob", what="bob's")
    settled(provider, server)
    failed, follow_up = server.bulk_requests()[before : before + 2]
    assert failed.json == follow_up.json == {"context": {"targetingKey": "bob"}}
    assert "If-None-Match" not in follow_up.headers  # alice's ETag is never sent for bob
    # The queued event's fetch waited for the failed fetch's retry (at least half of
    # retry_min_s 0.05) and went out as part of it.
    assert follow_up.t - failed.t >= 0.025 - 0.005
    assert switched.result(5) is False  # its own fetch failed; the next one served bob


async def test_a_context_switch_drops_the_stored_etag() -> None:
    context = CurrentContext()
    context.switch(b'{"context":{"targetingKey":"alice"}}')
    context.etag = '"alice-etag"'
    context.switch(b'{"context":{"targetingKey":"bob"}}')
    assert context.etag is None  # whatever is pending: no request for bob may carry it
    context.etag = '"bob-etag"'
    context.unusable()  # a context that cannot be sent: nothing of bob's is kept either
    assert context.etag is None
