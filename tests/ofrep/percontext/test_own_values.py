"""Per-context evaluation: every evaluation is answered for its own context, never
another's; one fetch per new context; a bounded wait; the static model on request."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from flageval.ofrep import OFREPProvider
from tests.ofrep.ofrep_server import OFREPTestServer, refetch, wait_until

from ._users import Users

MakeProvider = Callable[..., OFREPProvider]


def test_each_evaluation_is_answered_for_its_own_context_from_one_fetch(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    api.set_provider_and_wait(make_provider(server.url, change_detection="none"))
    client = api.get_client()
    for _ in range(3):
        assert client.get_string_value("who", "", users.context("ann")) == "ann|free|1"
        assert client.get_string_value("who", "", users.context("bob", "pro")) == "bob|pro|1"
    details = client.get_string_details("who", "", users.context("cy"))
    assert (details.value, details.reason, details.variant) == ("cy|free|1", "TARGETING_MATCH", "v")
    # One bulk request per context, each carrying that context.
    assert users.bodies_for("ann") == [{"targetingKey": "ann", "plan": "free"}]
    assert users.bodies_for("bob") == [{"targetingKey": "bob", "plan": "pro"}]
    # The provider's own context (the empty global one) is answered as before.
    assert client.get_string_value("who", "") == "||1"


def test_eight_threads_with_changing_users_only_ever_get_their_own_values(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    """Evictions (16 entries for 40 contexts), revalidations (a change and its event
    every few ms) and each thread switching users on every evaluation: every answer
    names the evaluation's own user and plan."""
    users = Users(server)
    server.event_streams = [server.sse_here()]
    provider = make_provider(
        server.url, context_max_entries=16, context_wait_s=10.0, context_single_flag="never"
    )
    api.set_provider_and_wait(provider)
    wait_until(lambda: server.sse_connected >= 1, what="stream")
    client = api.get_client()
    stop = threading.Event()
    wrong: list[tuple[str, str, object]] = []
    counts = [0] * 8

    def evaluate(n: int) -> None:
        rng = random.Random(n)
        for _ in range(150):
            user, plan = f"u{rng.randrange(20)}", rng.choice(["free", "pro"])
            details = client.get_string_details("who", "none", users.context(user, plan))
            counts[n] += 1
            if details.error_code is not None or details.value.split("|")[:2] != [user, plan]:
                wrong.append((user, plan, details.value))

    def change() -> None:
        while not stop.is_set():
            users.version += 1
            server.push(refetch(etag=f"v{users.version}"))
            stop.wait(0.005)

    changer = threading.Thread(target=change)
    threads = [threading.Thread(target=evaluate, args=(n,)) for n in range(8)]
    changer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    stop.set()
    changer.join(5)
    assert counts == [150] * 8
    assert wrong == []
    stats = provider.stats()
    assert stats["context_evictions"] > 0
    assert stats["context_revalidations"] > 0


def test_a_new_context_is_one_fetch_for_every_evaluation_meanwhile(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider = make_provider(server.url, change_detection="none", context_wait_s=10.0)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    server.hold_fetches()
    answers: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(client.get_string_value("who", "", users.context("zoe")))
        )
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: provider.stats()["context_misses"] == 8, what="8 misses")
    server.release_fetches()
    for t in threads:
        t.join(10)
    assert answers == ["zoe|free|1"] * 8
    assert len(users.bodies_for("zoe")) == 1
    assert provider.stats()["context_joined"] == 7


def test_a_sync_evaluation_waits_at_most_context_wait_s_then_answers_the_default(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider = make_provider(server.url, change_detection="none", context_wait_s=0.05)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    server.hold_fetches()
    details = client.get_string_details("who", "code-default", users.context("slow"))
    assert details.value == "code-default"
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.PROVIDER_NOT_READY
    assert "context_wait_s" in (details.error_message or "")
    assert provider.stats()["context_wait_timeouts"] == 1
    server.release_fetches()
    # The fetch went on: the next evaluation is answered from it, with no new request.
    wait_until(lambda: provider.stats()["context_fetch_ok"] == 1, what="fetch done")
    assert client.get_string_value("who", "", users.context("slow")) == "slow|free|1"
    assert len(users.bodies_for("slow")) == 1


def test_an_async_evaluation_awaits_its_contexts_fetch_without_blocking_its_loop(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    api.set_provider_and_wait(make_provider(server.url, change_detection="none"))
    client = api.get_client()

    async def main() -> list[str]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        got = await asyncio.gather(
            *(client.get_string_value_async("who", "", users.context(u)) for u in ("a", "b", "a"))
        )
        ticker.cancel()
        assert ticks > 0
        return list(got)

    assert asyncio.run(main()) == ["a|free|1", "b|free|1", "a|free|1"]
    assert len(users.bodies_for("a")) == 1


def test_the_static_model_is_an_explicit_choice(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    """context= given, or context_model="static": every evaluation gets the provider's
    one context's values, as before, and no per-context request is made."""
    users = Users(server)
    for kwargs in ({"context": users.context("owner")}, {"context_model": "static"}):
        api.set_evaluation_context(users.context("owner"))
        provider = make_provider(server.url, change_detection="none", **kwargs)
        api.set_provider_and_wait(provider)
        client = api.get_client()
        assert client.get_string_value("who", "", users.context("someone")) == "owner|free|1"
        assert provider.stats()["context_fetches"] == 0
        api.set_evaluation_context(EvaluationContext())


def test_a_context_that_cannot_be_encoded_answers_invalid_context_for_that_evaluation_only(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    users = Users(server)
    api.set_provider_and_wait(make_provider(server.url, change_detection="none"))
    client = api.get_client()
    bad = EvaluationContext("eve", {"x": Unprintable()})  # type: ignore[dict-item]
    details = client.get_string_details("who", "d", bad)
    assert (details.value, details.error_code) == ("d", ErrorCode.INVALID_CONTEXT)
    assert client.get_string_value("who", "", users.context("ann")) == "ann|free|1"


def test_past_the_bound_on_fetches_in_flight_a_miss_answers_at_once(
    server: OFREPTestServer, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flageval.ofrep import _percontext

    monkeypatch.setattr(_percontext, "MAX_WAITING", 3)
    users = Users(server)
    provider = make_provider(server.url, change_detection="none", context_wait_s=0.01)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    server.hold_fetches()
    for n in range(3):
        client.get_string_value("who", "", users.context(f"held{n}"))
    wait_until(lambda: server.in_flight == 3, what="3 fetches held")
    details = client.get_string_details("who", "code-default", users.context("one-more"))
    assert (details.value, details.error_code) == ("code-default", ErrorCode.GENERAL)
    assert provider.stats()["context_busy"] == 1
    assert users.bodies_for("one-more") == []
    server.release_fetches()
    wait_until(lambda: provider.stats()["context_fetch_ok"] == 3, what="held fetches done")
    assert client.get_string_value("who", "", users.context("held1")) == "held1|free|1"
