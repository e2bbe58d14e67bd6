"""Against fast-feature, a real OFREP server from PyPI, with flags managed through its
admin API (see fast_feature_server.py for how it is served on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .fast_feature_server import FastFeatureServer
from .ofrep_server import wait_until

ALICE_ONLY = {"if": [{"==": [{"var": "targetingKey"}, "alice"]}, "on", None]}


def test_etag_round_trip_200_then_304(
    fast_feature: FastFeatureServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    fast_feature.create_flag("checkout", {"on": True, "off": False}, "on")
    provider = make_provider(fast_feature.url, change_detection="polling", poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    wait_until(lambda: len(fast_feature.bulk_statuses) >= 4, what="a few polls")
    assert fast_feature.bulk_statuses[:4] == [200, 304, 304, 304]
    assert fast_feature.bulk_if_none_match[0] is None
    etags = set(fast_feature.bulk_if_none_match[1:4])
    assert len(etags) == 1 and next(iter(etags)).startswith('"')
    details = api.get_client().get_boolean_details("checkout", False)
    assert (details.value, details.variant, details.reason) == (True, "on", "STATIC")


def test_flag_change_is_seen_on_the_next_poll(
    fast_feature: FastFeatureServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
) -> None:
    fast_feature.create_flag("color", {"red": "#f00", "blue": "#00f"}, "red")
    fast_feature.create_flag("untouched", {"a": 1}, "a")
    provider = make_provider(fast_feature.url, change_detection="polling", poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    assert client.get_string_value("color", "") == "#f00"
    fast_feature.update_flag("color", {"red": "#f00", "blue": "#00f"}, "blue")
    wait_until(lambda: client.get_string_value("color", "") == "#00f", what="change seen")
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)) == 1)
    assert events.of(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0].flags_changed == ["color"]
    assert client.get_string_details("color", "").variant == "blue"

    fast_feature.admin("PATCH", "/color", {"enabled": False})  # disabled: reason DISABLED
    wait_until(lambda: client.get_string_details("color", "").reason == "DISABLED")
    fast_feature.admin("DELETE", "/color")
    wait_until(lambda: client.get_string_details("color", "x").error_code == "FLAG_NOT_FOUND")


def test_context_change_reevaluates_and_drops_the_etag(
    fast_feature: FastFeatureServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    fast_feature.create_flag(
        "beta", {"on": True, "off": False}, "off", targeting=ALICE_ONLY, metadata={"team": "x"}
    )
    provider = make_provider(fast_feature.url, context=EvaluationContext("bob"))
    api.set_provider_and_wait(provider)
    client = api.get_client()
    details = client.get_boolean_details("beta", True)
    assert (details.value, details.reason) == (False, "DEFAULT")
    assert details.flag_metadata == {"team": "x"}

    assert provider.set_context(EvaluationContext("alice")).result(5) is True
    details = client.get_boolean_details("beta", False)
    assert (details.value, details.variant, details.reason) == (True, "on", "TARGETING_MATCH")
    assert fast_feature.bulk_if_none_match == [None, None]  # no ETag across contexts
    assert fast_feature.bulk_statuses == [200, 200]


def test_422_on_a_bad_body_is_a_non_fatal_error(
    fast_feature: FastFeatureServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    fast_feature.create_flag("f", {"a": "A", "b": "B"}, "a")
    provider = make_provider(fast_feature.url, change_detection="polling", poll_interval_s=0.05)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    fast_feature.corrupt_bulk_bodies = 1_000  # every request from now on, until told
    fast_feature.update_flag("f", {"a": "A", "b": "B"}, "b")
    wait_until(lambda: provider.stats()["fetch_status_other"] >= 2, what="422s counted")
    assert 422 in fast_feature.bulk_statuses
    assert client.get_string_value("f", "") == "A"  # last good evaluation kept
    assert client.get_provider_status() == ProviderStatus.READY

    def recovered() -> bool:
        fast_feature.corrupt_bulk_bodies = 0  # again: the server's thread counts it down
        return client.get_string_value("f", "") == "B"

    wait_until(recovered, what="recovered")
    assert provider.stats()["fetch_status_other"] == fast_feature.bulk_statuses.count(422)


def test_the_persisted_entry_is_revalidated_by_fast_feature_and_corrected_on_change(
    tmp_path: Path, fast_feature: FastFeatureServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    # ADR-0009 against a real server: its ETag covers the response, compared exactly.
    fast_feature.create_flag("checkout", {"on": True, "off": False}, "on")
    alice = EvaluationContext("alice")
    first = make_provider(
        fast_feature.url, cache_dir=tmp_path, change_detection="none", context=alice
    )
    first.initialize(alice)
    wait_until(lambda: first.stats()["cache_writes"] == 1, what="entry written")
    first.shutdown()

    second = make_provider(
        fast_feature.url, cache_dir=tmp_path, change_detection="none", context=alice
    )
    second.initialize(alice)  # READY from the entry; the revalidation is a 304
    wait_until(lambda: second.stats()["fetch_not_modified"] == 1, what="304 from fast-feature")
    assert fast_feature.bulk_statuses[-1] == 304
    assert second.resolve_boolean_details("checkout", False).reason == "STATIC"
    second.shutdown()

    fast_feature.update_flag("checkout", {"on": True, "off": False}, "off")
    third = make_provider(
        fast_feature.url, cache_dir=tmp_path, change_detection="none", context=alice
    )
    third.initialize(alice)
    wait_until(lambda: third.resolve_boolean_details("checkout", True).value is False, what="fix")
    assert fast_feature.bulk_statuses[-1] == 200


def test_without_streams_the_provider_polls_by_default_and_sees_every_change(
    fast_feature: FastFeatureServer,
) -> None:
    # fast-feature advertises no eventStreams. Defaults: change_detection "sse", polling
    # every 30 s while no stream is advertised; a shorter period here, nothing else set.
    assert OFREPProvider(base_url=fast_feature.url).config.poll_interval_s == 30.0
    fast_feature.create_flag("color", {"red": "#f00", "blue": "#00f"}, "red")
    provider = OFREPProvider(base_url=fast_feature.url, poll_interval_s=0.25)
    statuses = fast_feature.bulk_statuses
    try:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        colors = ["blue", "red", "blue"]
        for color in colors:
            seen = len(statuses)
            wait_until(lambda n=seen: len(statuses) > n and statuses[-1] == 304, what="a poll")
            fast_feature.update_flag("color", {"red": "#f00", "blue": "#00f"}, color)
            value = {"red": "#f00", "blue": "#00f"}[color]
            wait_until(lambda v=value: client.get_string_value("color", "") == v, what="seen")
        # One 200 per change (and the first); every other request was a 304.
        assert statuses.count(200) == 1 + len(colors), statuses
        assert set(statuses) == {200, 304}
    finally:
        provider.shutdown()
