"""Persisted evaluations (ADR-0009) for a server process: each cache mode at start and
while serving the entry, what matches, what the file holds and who may read it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from flageval.ofrep import OFREPProvider

from .conftest import EventLog
from .helpers import DOWN, entry_file, settled
from .ofrep_server import OFREPTestServer, Scripted, wait_until

ANN = EvaluationContext("ann", {"plan": "pro"})


def persisted(
    server: OFREPTestServer, make: Callable[..., OFREPProvider], directory: Path, **kw: Any
) -> None:
    """A first process life: one evaluation for ann, written to ``directory``."""
    first = make(server.url, cache_dir=directory, change_detection="none", context=ANN, **kw)
    first.initialize(ANN)
    wait_until(lambda: first.stats()["cache_writes"] == 1, what="entry written")
    first.shutdown()


def test_restarted_while_the_server_fails_serves_the_entry_as_cached(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
) -> None:
    server.set_flag("f", True, "on")
    persisted(server, make_provider, tmp_path)
    server.script.extend([DOWN] * 3)
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    api.set_evaluation_context(ANN)
    api.set_provider_and_wait(provider)  # READY at once: no exception
    client = api.get_client()
    assert client.get_provider_status() == ProviderStatus.READY
    details = client.get_boolean_details("f", False)
    assert (details.value, details.reason, details.variant) == (True, Reason.CACHED, "on")
    # The background refresh fails (3 x 500, retried with backoff), then succeeds.
    server.set_flag("f", False, "off")
    wait_until(lambda: client.get_boolean_value("f", True) is False, what="fresh values")
    assert client.get_boolean_details("f", True).reason == "STATIC"
    # The values are served first, then the event is emitted; the SDK runs handlers on
    # a thread pool of its own.
    kind = ProviderEvent.PROVIDER_CONFIGURATION_CHANGED
    wait_until(lambda: len(events.of(kind)) >= 1, what="CONFIGURATION_CHANGED")
    changed = events.of(kind)
    assert len(changed) == 1 and changed[0].flags_changed == ["f"]
    assert provider.stats()["fetch_status_5xx"] == 3
    assert provider.stats()["cache_hits"] == 1


def test_the_entry_etag_revalidates_and_a_304_switches_to_the_server_reasons(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
) -> None:
    server.set_flag("f", 1)
    persisted(server, make_provider, tmp_path)
    etag = server.bulk_requests()[-1]
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none", context=ANN)
    server.hold_fetches()  # the revalidation waits: the entry is what is served
    provider.initialize(ANN)
    assert provider.resolve_integer_details("f", 0).reason == Reason.CACHED
    wait_until(lambda: server.in_flight == 1, what="revalidation in flight")
    server.release_fetches()
    wait_until(lambda: provider.stats()["fetch_not_modified"] == 1, what="304")
    revalidation = server.bulk_requests()[-1]
    assert (
        revalidation.headers.get("If-None-Match")
        == json.loads(entry_file(tmp_path).read_text())["etag"]
    )
    assert etag.json == revalidation.json  # the same context
    assert provider.resolve_integer_details("f", 0).reason == "STATIC"
    wait_until(lambda: provider.stats()["config_changes"] == 1, what="reasons switched")


def test_same_targeting_key_other_attributes_hit_but_revalidate_unconditionally(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.flags_for_context = lambda ctx: {
        "plan": {"key": "plan", "value": ctx.get("plan", "none"), "reason": "TARGETING_MATCH"}
    }
    persisted(server, make_provider, tmp_path)
    free = EvaluationContext("ann", {"plan": "free"})
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none", context=free)
    provider.initialize(free)
    wait_until(lambda: provider.resolve_string_details("plan", "").value == "free", what="fixed")
    assert "If-None-Match" not in server.bulk_requests()[-1].headers
    assert provider.stats()["cache_hits"] == 1


def test_another_targeting_key_or_an_expired_entry_is_a_miss(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    persisted(server, make_provider, tmp_path)
    server.script.append(DOWN)
    other = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    with pytest.raises(GeneralError):
        other.initialize(EvaluationContext("bob"))
    assert other.stats()["cache_misses"] == 1
    other.shutdown()  # its background retry would take the next scripted answer
    server.script.append(DOWN)
    expired = make_provider(
        server.url, cache_dir=tmp_path, change_detection="none", cache_ttl_s=1e-6
    )
    with pytest.raises(GeneralError):
        expired.initialize(ANN)
    assert expired.stats()["cache_expired"] == 1


def test_the_file_holds_no_secret_and_is_owner_only(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    server.event_streams = [
        server.sse_here("plain"),
        server.sse_here("tokened", query="token=SECRET-STREAM-TOKEN"),
    ]
    directory = tmp_path / "nested" / "cache"
    provider = make_provider(
        server.url,
        cache_dir=directory,
        cache_key_prefix="svc",
        headers={"Authorization": "Bearer SECRET-HEADER", "X-API-Key": "SECRET-KEY"},
    )
    provider.initialize(ANN)
    wait_until(lambda: provider.stats()["cache_writes"] >= 1, what="entry written")
    path = entry_file(directory)
    raw = path.read_text()
    for secret in ("SECRET", "Bearer", 'ann"', "Authorization"):
        assert secret not in raw
    doc = json.loads(raw)
    assert doc["version"] == 2
    assert doc["cacheKeyHash"] == hashlib.sha256(b"svc:ann").hexdigest()
    assert "eventStreams" not in doc["payload"] and "/sse/" not in raw  # no stream URL
    assert doc["streamsWithheld"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert [p.name for p in directory.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Scripted(401), ErrorCode.GENERAL),
        (Scripted(400, b'{"errorCode": "INVALID_CONTEXT"}'), ErrorCode.INVALID_CONTEXT),
    ],
)
def test_rejected_while_serving_the_entry_keeps_it_for_the_session(
    answer: Scripted,
    code: ErrorCode,
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    events: EventLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.set_flag("f", 1)
    persisted(server, make_provider, tmp_path)
    before = entry_file(tmp_path).read_bytes()
    server.script.append(answer)
    caplog.set_level(logging.ERROR, logger="flageval.ofrep")
    provider = make_provider(server.url, cache_dir=tmp_path, poll_interval_s=0.05)
    api.set_evaluation_context(ANN)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) == 1, what="error event")
    assert events.of(ProviderEvent.PROVIDER_ERROR)[0].error_code == code
    # The SDK sets a status before it runs the event's handlers, and the provider's
    # event comes after the SDK's own READY for initialize().
    assert client.get_provider_status() == ProviderStatus.ERROR
    details = client.get_integer_details("f", 0)
    assert (details.value, details.reason) == (1, Reason.CACHED)
    count = len(server.all_requests())
    time.sleep(0.3)  # a window for what must not happen: six poll intervals
    assert len(server.all_requests()) == count
    assert entry_file(tmp_path).read_bytes() == before  # not deleted, not rewritten
    assert "persisted evaluation" in caplog.text


def test_network_first_falls_back_only_on_transient_failures(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.set_flag("f", 1)
    persisted(server, make_provider, tmp_path)
    server.set_flag("f", 2)
    fresh = make_provider(server.url, cache_dir=tmp_path, cache_mode="network-first")
    fresh.initialize(ANN)  # the network answers: its values, not the entry's
    assert fresh.resolve_integer_details("f", 0).value == 2
    fresh.shutdown()

    server.script.extend([DOWN] * 1000)  # down until the test clears it
    fallback = make_provider(
        server.url,
        cache_dir=tmp_path,
        cache_mode="network-first",
        change_detection="none",
        context=ANN,
    )
    fallback.initialize(ANN)  # READY from the entry after the 500
    assert fallback.resolve_integer_details("f", 0).reason == Reason.CACHED
    server.set_flag("f", 3)
    server.script.clear()  # back up: the next retry, whatever its backoff, gets the 3
    wait_until(
        lambda: fallback.resolve_integer_details("f", 0).value == 3,
        timeout_s=60.0,
        what="retried",
    )

    server.script.append(Scripted(403))
    fatal = make_provider(server.url, cache_dir=tmp_path, cache_mode="network-first")
    with pytest.raises(ProviderFatalError):
        fatal.initialize(ANN)
    assert fatal.resolve_integer_details("f", 0).error_code == ErrorCode.PROVIDER_NOT_READY


def test_disabled_neither_reads_nor_writes(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    provider = make_provider(server.url, cache_dir=tmp_path, cache_mode="disabled")
    provider.initialize(ANN)
    settled(provider, server)
    assert list(tmp_path.iterdir()) == []
    assert {k: v for k, v in provider.stats().items() if k.startswith("cache_") and v} == {}


def test_a_failed_write_is_counted_and_logged_and_the_provider_goes_on(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.set_flag("f", 1)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="flageval.ofrep")
    provider = make_provider(server.url, cache_dir=blocked / "cache", change_detection="none")
    provider.initialize(ANN)
    wait_until(lambda: provider.stats()["cache_write_failed"] == 1, what="failed write")
    assert provider.resolve_integer_details("f", 0).value == 1
    assert "not persisted" in caplog.text and str(tmp_path) not in caplog.text


def test_an_entry_over_the_size_bound_is_refused_and_counted(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    from flageval.ofrep._persist import MAX_ENTRY_BYTES

    server.set_flag("big", "x" * (MAX_ENTRY_BYTES + 1))
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    provider.initialize(ANN)
    assert provider.stats()["cache_write_too_large"] == 1
    assert list(tmp_path.iterdir()) == []


def test_a_directory_other_users_can_write_is_not_read(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", 1)
    persisted(server, make_provider, tmp_path)
    os.chmod(tmp_path, 0o777)
    server.script.append(DOWN)
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    with pytest.raises(GeneralError):
        provider.initialize(ANN)  # the entry may have been planted: not served
    assert provider.stats()["cache_read_failed"] == 1


def test_processes_sharing_the_directory_never_see_a_torn_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.ofrep.cache_worker",
                str(tmp_path),
                "shared.json",
                "--seconds",
                "1.5",
                "--tag",
                f"w{i}",
            ],
            cwd=root,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    reports = []
    for worker in workers:
        out, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0
        reports.append(json.loads(out))
    assert all(r["writes"] > 10 and r["reads"] == r["writes"] for r in reports), reports
    assert sum(r["bad"] for r in reports) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]  # no temporary left
    assert stat.S_IMODE((tmp_path / "shared.json").stat().st_mode) == 0o600
