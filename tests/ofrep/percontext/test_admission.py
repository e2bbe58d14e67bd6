"""Which contexts get a bulk fetch and an entry: contexts unique per evaluation go to
the single-flag endpoint, ``context_key_attributes`` keys entries by what identifies an
answer, and the cache stays within its entry count and byte budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider
from tests.ofrep.fast_feature_server import FastFeatureServer
from tests.ofrep.ofrep_server import OFREPTestServer, wait_until
from tests.ofrep.server.conftest import write_flags
from tests.ofrep.server.process import ServerProcess

from ._users import Users

MakeProvider = Callable[..., OFREPProvider]


def test_contexts_unique_per_evaluation_go_to_the_single_flag_endpoint(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider = make_provider(server.url, change_detection="none", context_wait_s=5.0)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    for n in range(200):
        ctx = users.context(f"u{n % 7}", request_id=f"r{n}")
        assert client.get_string_value("who", "", ctx) == f"u{n % 7}|free|1"
    stats = provider.stats()
    # 63 new contexts are fetched in bulk and none comes back; from the 64th on the
    # single-flag endpoint answers, with the evaluation's whole context, uncached.
    assert stats["context_fetch_ok"] == 200
    assert len(server.bulk_requests()) == 1 + 63
    assert stats["context_single_flag"] == 200 - 63
    singles = [r for r in server.all_requests() if r.path.endswith("/flags/who")]
    assert len(singles) == 137
    assert singles[-1].json == {
        "context": {"targetingKey": "u3", "plan": "free", "request_id": "r199"}
    }
    assert provider._per.cache.sizes()[0] == 63  # type: ignore[union-attr]
    # A context that comes back: single-flag first, then one bulk fetch, then memory.
    for _ in range(3):
        assert client.get_string_value("who", "", users.context("back")) == "back|free|1"
    assert len(users.bodies_for("back")) == 1


def test_single_flag_never_keeps_every_context_a_bulk_fetch(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider = make_provider(
        server.url, change_detection="none", context_wait_s=5.0, context_single_flag="never"
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    for n in range(100):
        client.get_string_value("who", "", users.context("u", request_id=f"r{n}"))
    assert provider.stats()["context_single_flag"] == 0
    assert len(server.bulk_requests()) == 1 + 100


def test_key_attributes_key_and_send_only_the_attributes_that_identify_an_answer(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    provider = make_provider(server.url, change_detection="none", context_key_attributes=["plan"])
    api.set_provider_and_wait(provider)
    client = api.get_client()
    for n in range(50):
        ctx = users.context("ann", "pro", request_id=f"r{n}", at=n)
        assert client.get_string_value("who", "", ctx) == "ann|pro|1"
    assert users.bodies_for("ann") == [{"targetingKey": "ann", "plan": "pro"}]
    assert client.get_string_value("who", "", users.context("ann", "free")) == "ann|free|1"


def test_the_cache_evicts_least_recently_used_within_its_count_and_byte_budget(
    server: OFREPTestServer, make_provider: MakeProvider
) -> None:
    users = Users(server)
    server.flags_for_context = lambda ctx: {
        f"f{i}": {"key": f"f{i}", "value": f"{ctx.get('targetingKey')}-{i}", "reason": "STATIC"}
        for i in range(100)
    }
    budget = 65_536
    provider = make_provider(
        server.url,
        change_detection="none",
        context_max_entries=5,
        context_max_bytes=budget,
        context_single_flag="never",
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    for n in range(30):
        assert client.get_string_value("f7", "", users.context(f"u{n:02}")) == f"u{n:02}-7"
    count, size = provider._per.cache.sizes()  # type: ignore[union-attr]
    # Each answer is ~4.4 KB of JSON, costed at 6 bytes a byte: one fits in 64 KiB.
    assert (count, provider.stats()["context_evictions"]) == (1, 29)
    assert size <= budget
    # The most recent contexts are the ones kept: answered with no new request.
    before = len(server.bulk_requests())
    assert client.get_string_value("f1", "", users.context("u29")) == "u29-1"
    assert len(server.bulk_requests()) == before


def test_our_own_server_answers_each_context_by_its_targeting_rule(
    tmp_path: Path, make_provider: MakeProvider
) -> None:
    rule = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, "@macrosoft.com"]}, "on", "off"]},
    }
    flags = write_flags(tmp_path / "f.json", {"beta": rule})
    server = ServerProcess([flags])
    try:
        api.set_provider_and_wait(make_provider(server.url, cache_mode="disabled"))
        client = api.get_client()
        ada = EvaluationContext("ada", {"email": "ada@macrosoft.com"})
        bob = EvaluationContext("bob", {"email": "bob@example.com"})
        for _ in range(3):
            assert client.get_boolean_value("beta", False, ada) is True
            assert client.get_boolean_value("beta", True, bob) is False
        rule["targeting"] = {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", "off"]}
        write_flags(flags, {"beta": rule})  # the server's event stream announces it
        wait_until(lambda: client.get_boolean_value("beta", False, bob), what="bob's change")
        wait_until(lambda: not client.get_boolean_value("beta", True, ada), what="ada's change")
    finally:
        server.stop()


def test_fast_feature_answers_each_context_by_its_targeting_rule_and_polling_revalidates(
    fast_feature: FastFeatureServer, make_provider: MakeProvider
) -> None:
    """A real outside OFREP server with no event stream: each context gets its own
    answer, and the default polling revalidates the recent contexts with their ETags."""
    only = {"if": [{"==": [{"var": "targetingKey"}, "alice"]}, "on", None]}
    fast_feature.create_flag("beta", {"on": True, "off": False}, "off", targeting=only)
    provider = make_provider(fast_feature.url, poll_interval_s=0.1, cache_mode="disabled")
    api.set_provider_and_wait(provider)
    client = api.get_client()
    alice, bob = EvaluationContext("alice"), EvaluationContext("bob")
    for _ in range(3):
        assert client.get_boolean_value("beta", False, alice) is True
        assert client.get_boolean_value("beta", True, bob) is False
    wait_until(lambda: provider.stats()["context_not_modified"] >= 2, what="304s on polls")
    only["if"][0]["=="][1] = "bob"
    fast_feature.update_flag("beta", {"on": True, "off": False}, "off", targeting=only)
    wait_until(lambda: client.get_boolean_value("beta", False, bob), what="bob's change")
    wait_until(lambda: not client.get_boolean_value("beta", True, alice), what="alice's")
    assert provider.stats()["context_wait_timeouts"] == 0
