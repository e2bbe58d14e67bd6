"""flageval's own OFREPProvider (static context) against the server, end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import Reason

from flageval.ofrep import OFREPProvider

from .conftest import static, write_flags
from .process import ServerProcess, wait_until

Start = Callable[..., ServerProcess]
MakeProvider = Callable[..., OFREPProvider]

USER = EvaluationContext("user-7", {"email": "ada@macrosoft.com"})


def targeted(domain: str) -> dict[str, object]:
    return {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, domain]}, "on", "off"]},
    }


def test_event_streams_bring_a_change_to_the_provider(
    tmp_path: Path, start_server: Start, make_provider: MakeProvider
) -> None:
    flags = write_flags(
        tmp_path / "f.json", {"color": static("red"), "beta": targeted("@macrosoft.com")}
    )
    server = start_server([flags])
    api.set_provider_and_wait(make_provider(server.url, context=USER, cache_mode="disabled"))
    client = api.get_client()
    details = client.get_boolean_details("beta", False)
    assert (details.value, details.variant, details.reason) == (True, "on", Reason.TARGETING_MATCH)
    assert client.get_string_value("color", "none") == "red"
    wait_until(lambda: server.status()["streams"]["open"] == 1, what="the provider's stream")
    # after connecting, the provider re-fetches once (ADR-0008): nothing changed, a 304
    wait_until(lambda: server.status()["counts"]["not_modified"] == 1, what="the re-fetch")
    write_flags(flags, {"color": static("blue"), "beta": targeted("@example.com")})
    wait_until(lambda: client.get_string_value("color", "none") == "blue", what="change served")
    assert client.get_boolean_value("beta", True) is False
    counts = server.status()["counts"]
    # then only the re-fetch the event caused (its flagConfigEtag is new: a 200)
    assert (counts["bulk_requests"], counts["ok"], counts["not_modified"]) == (3, 2, 1)


def test_polling_gets_304s_without_evaluation_until_a_change(
    tmp_path: Path, start_server: Start, make_provider: MakeProvider
) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags], "--no-event-streams")
    provider = make_provider(
        server.url,
        context=USER,
        change_detection="polling",
        poll_interval_s=0.05,
        cache_mode="disabled",
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_string_value("color", "none") == "red"
    wait_until(lambda: server.status()["counts"]["not_modified"] >= 5, what="five 304s")
    counts = server.status()["counts"]
    assert counts["evaluations"] == 1  # the one 200: no 304 evaluated anything
    write_flags(flags, {"color": static("blue")})
    wait_until(lambda: client.get_string_value("color", "none") == "blue", what="change served")
    assert provider.stats()["fetch_not_modified"] >= 5


def test_a_restarted_provider_revalidates_its_persisted_answer_with_a_304(
    tmp_path: Path, start_server: Start, make_provider: MakeProvider
) -> None:
    """The ETag a first process stored is one the server still recognises: the next
    process starts from its file and the server confirms it without evaluating. (With
    event streams advertised the refresh is a 200: their URLs are never persisted, and
    a 304 would not bring them.)"""
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags], "--no-event-streams")
    cache = tmp_path / "cache"
    first = make_provider(server.url, context=USER, cache_dir=str(cache))
    api.set_provider_and_wait(first)
    assert api.get_client().get_string_value("color", "none") == "red"
    api.shutdown()
    second = make_provider(server.url, context=USER, cache_dir=str(cache))
    api.set_provider_and_wait(second)
    wait_until(lambda: second.stats()["fetch_not_modified"] >= 1, what="the revalidation")
    assert api.get_client().get_string_value("color", "none") == "red"
    counts = server.status()["counts"]
    assert counts["ok"] == 1 and counts["not_modified"] >= 1 and counts["evaluations"] == 1
