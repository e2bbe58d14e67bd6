"""The intake's DD-API-KEY never follows a redirect to another origin: a 3xx is not
followed at all, and the origin it points to gets no request."""

from __future__ import annotations

from typing import Any

from openfeature import api
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import Telemetry
from tests.intake import PATH, Behaviour, Intake


def test_a_redirecting_intake_does_not_get_the_api_key_replayed_elsewhere(
    intake: Intake,
) -> None:
    elsewhere = Intake().start()
    try:
        # 307 keeps method and body: followed, it would replay the POST and its headers.
        intake.script(Behaviour(status=307, headers={"Location": elsewhere.url + PATH}))
        tel = Telemetry(
            agentless=True,
            api_key="secret-api-key-123",
            intake_url=intake.url + PATH,
            service="t",
            flush_interval_s=60.0,
        )
        api.set_provider_and_wait(
            InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})})
        )
        client: Any = api.get_client()
        client.add_hooks([tel.hook])
        for _ in range(3):
            client.get_boolean_value("f", False)
        tel.flush(5.0)
        tel.shutdown(2.0)
        assert elsewhere.received == []  # nothing, and so no key, went to the other origin
        # A 3xx is not an answer the intake took: counted, not silently lost.
        stats = tel.stats()
        assert stats.dropped == {"intake_rejected": 3} and stats.conserved, stats
    finally:
        elsewhere.stop()
