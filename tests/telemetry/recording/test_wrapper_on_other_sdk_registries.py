"""The wrapper reads the SDK's provider status through a private registry
(``openfeature.provider._registry``), which another SDK release may change: it reads
the registry's dict when there is one, else the registry's getter, and with neither it
still serves and records every evaluation the provider answers (only the ones the SDK
short-circuits are then the hook's alone). Never an error at import or evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval._instrumented as instrumented
from flageval import Telemetry, instrument

REPO = Path(__file__).resolve().parents[3]
MakeTelemetry = Callable[..., Telemetry]


class DictRegistry:
    """The registry as openfeature-sdk 0.10 has it: a dict of statuses."""

    def __init__(self) -> None:
        self._provider_status: dict[Any, ProviderStatus] = {}


class GetterRegistry:
    """A registry that answers through its getter only."""

    def __init__(self, answer: ProviderStatus) -> None:
        self.answer = answer
        self.asked: list[Any] = []

    def get_provider_status(self, provider: Any) -> ProviderStatus:
        self.asked.append(provider)
        return self.answer


def test_the_registrys_dict_is_read_where_it_is_at_each_call() -> None:
    registry = DictRegistry()
    read = instrumented.status_reader(registry)
    assert read is not None
    provider = object()
    assert read(provider) is ProviderStatus.NOT_READY  # not registered (yet)
    registry._provider_status[provider] = ProviderStatus.FATAL
    assert read(provider) is ProviderStatus.FATAL
    registry._provider_status = {provider: ProviderStatus.READY}  # clear_providers() does this
    assert read(provider) is ProviderStatus.READY


def test_without_the_dict_the_registrys_getter_is_asked() -> None:
    registry = GetterRegistry(ProviderStatus.STALE)
    read = instrumented.status_reader(registry)
    assert read is not None
    provider = object()
    assert read(provider) is ProviderStatus.STALE and registry.asked == [provider]


@pytest.mark.parametrize("registry", [None, object(), type("Odd", (), {"_provider_status": 3})()])
def test_without_dict_or_getter_there_is_no_reader(registry: Any) -> None:
    assert instrumented.status_reader(registry) is None


def test_a_not_ready_provider_read_through_the_getter_is_recorded(
    make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the getter (the SDK's own), a short-circuited evaluation is recorded
    as with the dict: PROVIDER_NOT_READY, once."""
    from openfeature.provider._registry import provider_registry

    monkeypatch.setattr(instrumented, "_status_of", provider_registry.get_provider_status)
    tel = make_telemetry(autostart=False)
    release = threading.Event()

    class Starting(InMemoryProvider):
        def initialize(self, evaluation_context: Any) -> None:
            release.wait(30.0)  # not ready until the test says so

    flags = {"f": InMemoryFlag("on", {"on": True, "off": False})}
    api.set_provider(instrument(Starting(flags), telemetry=tel), domain="not-yet")
    try:
        details = api.get_client("not-yet").get_boolean_details("f", False)
    finally:
        release.set()
    assert details.error_code == ErrorCode.PROVIDER_NOT_READY
    assert tel.handoff is not None
    snapshots = list(tel.handoff.queue)
    assert [(s[0], s[2]) for s in snapshots] == [("f", ErrorCode.PROVIDER_NOT_READY)]


#: An SDK release without the private module: it is made unimportable before flageval
#: is imported (the SDK itself has already loaded it, as it would have its own).
WITHOUT_REGISTRY = textwrap.dedent(
    """
    import json, sys
    from openfeature import api
    from openfeature.exception import ErrorCode
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    sys.modules["openfeature.provider._registry"] = None  # import now raises ImportError
    import flageval
    import flageval._instrumented as instrumented

    tel = flageval.Telemetry(agent_url="http://127.0.0.1:9", service="t", autostart=False)
    flags = {"f": InMemoryFlag("on", {"on": True, "off": False})}
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags), telemetry=tel))
    client = api.get_client()
    answers = [client.get_boolean_value("f", False) for _ in range(3)]
    missing = client.get_boolean_details("nope", False).error_code
    queued = [(s[0], s[2]) for s in tel.handoff.queue]
    print(json.dumps({
        "reader": instrumented._status_of is None,
        "answers": answers,
        "missing": str(missing),
        "queued": [[f, str(e)] for f, e in queued],
    }))
    """
)


def test_without_the_private_registry_every_answer_is_still_served_and_recorded() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_REGISTRY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["reader"] is True  # nothing to read the status with: no short-circuit hook
    assert got["answers"] == [True, True, True]
    assert got["missing"] == str(ErrorCode.FLAG_NOT_FOUND)
    assert got["queued"] == [["f", "None"]] * 3 + [["nope", str(ErrorCode.FLAG_NOT_FOUND)]]
