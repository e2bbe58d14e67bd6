"""Agent conventions against a local agent stand-in (tests/intake.py on 127.0.0.1) that
answers GET /info the way a current Datadog agent does, and its variants: no /info,
/info that hangs, v2 only, no EVP proxy, a route that goes away, an agent that does not
forward the origin headers; and the headers every request carries."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
import flageval._container as container
from flageval import Telemetry
from flageval import _agent as agent
from tests.intake import AGENT_INFO, PATH, PATH_V4, Behaviour, Intake

MakeTelemetry = Callable[..., Telemetry]
DOCKER_ID = "3726184226f5d3147c25fdeab5b60097e378e8a720503a5e19ecfdf29f869860"


def info_with(endpoints: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    info = copy.deepcopy(AGENT_INFO)
    if endpoints is not None:
        info["endpoints"] = endpoints
    info.update(changes)
    return info


V2_ONLY = [e for e in AGENT_INFO["endpoints"] if e not in ("/evp_proxy/v3/", "/evp_proxy/v4/")]
NO_PROXY = [e for e in AGENT_INFO["endpoints"] if not e.startswith("/evp_proxy/")]


def client_of(tel: Telemetry) -> Any:
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
    client.add_hooks([tel.hook])
    return client


def evaluate(client: Any, n: int, tag: str = "u") -> None:
    for i in range(n):
        client.get_boolean_value("f", False, EvaluationContext(f"{tag}-{i % 3}"))


def header(headers: dict[str, str], name: str) -> str | None:
    return {k.lower(): v for k, v in headers.items()}.get(name.lower())


@pytest.fixture(autouse=True)
def _outside_a_container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever machine runs the suite: a host's cgroup file unless a test says else."""
    host = tmp_path / "host_cgroup"
    host.write_text("0::/user.slice/user-1000.slice/session-3.scope\n")
    monkeypatch.setattr(container, "CGROUP_FILE", str(host))
    monkeypatch.setattr(container, "CGROUP_NAMESPACE", str(tmp_path / "no_ns"))
    monkeypatch.delenv("DD_EXTERNAL_ENV", raising=False)


def test_current_agent_v4_discovered_once_at_start_with_origin_headers(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    intake.set_info(AGENT_INFO)
    tel = make_telemetry()
    client = client_of(tel)
    evaluate(client, 7)
    # Asked when the worker started (the first evaluation), before any flush.
    assert intake.wait_for(lambda: len(intake.info_requests) == 1)
    assert tel.flush(5.0)
    evaluate(client, 5)
    assert tel.flush(5.0)
    assert len(intake.info_requests) == 1  # not asked again on a healthy route
    assert [r.path for r in intake.received] == [PATH_V4, PATH_V4]
    assert intake.evaluations() == 12
    for headers in [r.headers for r in intake.received] + intake.info_requests:
        assert header(headers, "DD-EVP-ORIGIN") == "flageval"
        assert header(headers, "DD-EVP-ORIGIN-VERSION") == flageval.__version__
        ua = header(headers, "User-Agent")
        assert ua is not None and ua.startswith(f"flageval/{flageval.__version__} ")
        assert header(headers, "Datadog-Container-ID") is None  # not in a container
        assert header(headers, "Datadog-Entity-ID") is None
    assert header(intake.received[0].headers, "X-Datadog-EVP-Subdomain") == (
        "event-platform-intake"
    )
    assert tel.stats().dropped == {} and tel.stats().conserved


def test_v2_only_agent_gets_v2(make_telemetry: MakeTelemetry, intake: Intake) -> None:
    intake.set_info(info_with(V2_ONLY))
    tel = make_telemetry()
    evaluate(client_of(tel), 4)
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH]
    assert intake.evaluations() == 4 and len(intake.info_requests) == 1


def test_no_info_falls_back_to_v2_and_asks_again_later(
    make_telemetry: MakeTelemetry, intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    tel = make_telemetry()  # the stand-in has no /info yet: 404, an old agent
    client = client_of(tel)
    evaluate(client, 3)
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH]
    assert len(intake.info_requests) == 1  # within the re-check interval: not asked again
    # The agent is upgraded: a flush past the re-check interval finds v4.
    intake.set_info(AGENT_INFO)
    monkeypatch.setattr(agent, "RECHECK_S", 0.0)  # the interval has passed
    evaluate(client, 2)
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH, PATH_V4]
    assert len(intake.info_requests) == 2
    evaluate(client, 1)
    assert tel.flush(5.0)
    assert len(intake.info_requests) == 2  # discovered now: no more asking
    assert intake.evaluations() == 6 and tel.stats().dropped == {}


def test_info_that_hangs_is_bounded_by_the_request_timeout(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    """/info never answers: evaluations go on meanwhile, and a flush waits for the
    discovery one request timeout (2 s), not half its own deadline (30 s), then posts
    to v2."""
    intake.set_info(AGENT_INFO, Behaviour(action="hang"))
    tel = make_telemetry(request_timeout_s=2.0)
    client = client_of(tel)
    evaluate(client, 5)
    assert intake.wait_for(lambda: len(intake.info_requests) == 1)
    evaluate(client, 2000)  # while the discovery hangs on the worker's loop
    started = time.monotonic()
    assert tel.flush(60.0)
    took = time.monotonic() - started
    # Half the flush's deadline would be 30 s; a loaded machine does not turn 2 s
    # into 15.
    assert took < 15.0, took
    assert [r.path for r in intake.received] == [PATH]
    assert intake.evaluations() == 2005 and tel.stats().dropped == {}


def test_no_evp_proxy_is_one_error_and_a_named_loss_not_a_404_every_flush(
    make_telemetry: MakeTelemetry,
    intake: Intake,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="flageval")
    intake.set_info(info_with(NO_PROXY))
    tel = make_telemetry()
    client = client_of(tel)
    for round_no in range(3):
        evaluate(client, 10, tag=f"r{round_no}")
        assert tel.flush(5.0)  # nothing left waiting: counted, not buffered
    assert intake.received == []  # never posted into a 404
    stats = tel.stats()
    assert stats.dropped == {"agent_no_evp_proxy": 30} and stats.conserved
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    text = errors[0].getMessage()
    assert "lists no EVP proxy" in text and "agent_no_evp_proxy" in text and "7.64.3" in text
    assert len(intake.info_requests) == 1  # re-checked at most every minute
    # The agent gets its proxy back: past the re-check interval, bodies go again.
    intake.set_info(AGENT_INFO)
    monkeypatch.setattr(agent, "RECHECK_S", 0.0)  # the interval has passed
    evaluate(client, 4, tag="back")
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH_V4] and intake.evaluations() == 4
    assert any("now lists an EVP proxy" in r.getMessage() for r in caplog.records)
    assert tel.stats().dropped == {"agent_no_evp_proxy": 30}


def test_404_from_the_route_rediscovers_and_the_body_goes_to_the_new_route(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    intake.set_info(AGENT_INFO)
    tel = make_telemetry()
    client = client_of(tel)
    evaluate(client, 3)
    assert tel.flush(5.0)
    # The agent is replaced by one without v4: its v4 route answers 404.
    intake.set_info(info_with(V2_ONLY))
    intake.script(Behaviour(status=404))
    evaluate(client, 6, tag="moved")
    assert tel.flush(5.0)
    assert [(r.path, r.status) for r in intake.received] == [
        (PATH_V4, 200),
        (PATH_V4, 404),
        (PATH, 200),
    ]
    assert intake.received[1].body == intake.received[2].body  # the same body, once taken
    assert len(intake.info_requests) == 2
    # Another 404 within 30 s is not a reason to ask again: rejected, as any 4xx.
    intake.script(Behaviour(status=404))
    evaluate(client, 2, tag="again")
    assert tel.flush(5.0)
    assert len(intake.info_requests) == 2
    stats = tel.stats()
    assert intake.evaluations() == 9
    assert stats.dropped == {"intake_rejected": 2} and stats.conserved


def test_an_agent_that_does_not_forward_the_origin_is_told_once(
    make_telemetry: MakeTelemetry, intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flageval")
    older = ["Content-Type", "Accept-Encoding", "Content-Encoding", "User-Agent"]
    intake.set_info(info_with(evp_proxy_allowed_headers=older, version="7.57.2"))
    tel = make_telemetry()
    evaluate(client_of(tel), 2)
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH_V4]  # the route is still v4
    told = [r.getMessage() for r in caplog.records if "does not forward" in r.getMessage()]
    assert len(told) == 1 and "DD-EVP-ORIGIN" in told[0]


def test_an_answer_that_is_not_the_agents_falls_back_to_v2(
    make_telemetry: MakeTelemetry, intake: Intake
) -> None:
    intake.set_info("<html>not an agent</html>")
    tel = make_telemetry()
    evaluate(client_of(tel), 2)
    assert tel.flush(5.0)
    assert [r.path for r in intake.received] == [PATH] and intake.evaluations() == 2


def test_in_a_container_the_agent_gets_its_ids(
    make_telemetry: MakeTelemetry,
    intake: Intake,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cgroup = tmp_path / "docker_cgroup"
    cgroup.write_text(f"12:pids:/docker/{DOCKER_ID}\n0::/docker/{DOCKER_ID}\n")
    monkeypatch.setattr(container, "CGROUP_FILE", str(cgroup))
    intake.set_info(AGENT_INFO)
    tel = make_telemetry()
    evaluate(client_of(tel), 2)
    assert tel.flush(5.0)
    for headers in [intake.received[0].headers, intake.info_requests[0]]:
        assert header(headers, "Datadog-Container-ID") == DOCKER_ID
        assert header(headers, "Datadog-Entity-ID") == f"ci-{DOCKER_ID}"


def test_agentless_keeps_its_route_and_headers(
    intake: Intake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cgroup = tmp_path / "docker_cgroup"
    cgroup.write_text(f"12:pids:/docker/{DOCKER_ID}\n")
    monkeypatch.setattr(container, "CGROUP_FILE", str(cgroup))
    intake.set_info(AGENT_INFO)  # would say v4, but agentless never asks
    tel = Telemetry(
        agentless=True,
        api_key="k-123",
        intake_url=intake.url + "/api/v2/flagevaluation",
        service="t",
        flush_interval_s=60.0,
    )
    try:
        evaluate(client_of(tel), 3)
        assert tel.flush(5.0)
    finally:
        tel.shutdown(2.0)
    assert intake.info_requests == []
    (got,) = intake.received
    assert got.path == "/api/v2/flagevaluation"
    assert header(got.headers, "DD-API-KEY") == "k-123"
    assert header(got.headers, "DD-EVP-ORIGIN") == "flageval"
    assert header(got.headers, "X-Datadog-EVP-Subdomain") is None
    assert header(got.headers, "Datadog-Container-ID") is None  # for an agent only


def test_a_pinned_intake_url_is_never_rerouted(intake: Intake) -> None:
    intake.set_info(AGENT_INFO)
    tel = Telemetry(intake_url=intake.url + PATH, service="t", flush_interval_s=60.0)
    try:
        evaluate(client_of(tel), 3)
        assert tel.flush(5.0)
    finally:
        tel.shutdown(2.0)
    assert intake.info_requests == []  # FLAGEVAL_INTAKE_URL is where bodies go, as given
    (got,) = intake.received
    assert got.path == PATH and header(got.headers, "DD-EVP-ORIGIN") == "flageval"


def test_no_evp_proxy_is_told_once_even_when_info_flaps(
    make_telemetry: MakeTelemetry,
    intake: Intake,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="flageval")
    intake.set_default(Behaviour(status=404))  # an agent without a proxy 404s its routes
    intake.set_info(info_with(NO_PROXY))
    tel = make_telemetry()
    client = client_of(tel)
    evaluate(client, 3, tag="a")
    assert tel.flush(5.0)
    intake.set_info(None, Behaviour(status=503))  # the agent restarting: no /info
    monkeypatch.setattr(agent, "RECHECK_S", 0.0)  # from now on every flush re-checks
    evaluate(client, 2, tag="b")
    assert tel.flush(5.0)  # the v2 fallback is tried; its 404 is a rejection
    intake.set_info(info_with(NO_PROXY))  # back, still without a proxy
    evaluate(client, 4, tag="c")
    assert tel.flush(5.0)
    # At start, at each of two re-checks, and once more after the fallback's 404.
    assert len(intake.info_requests) == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert not any("now lists" in r.getMessage() for r in caplog.records)
    stats = tel.stats()
    assert stats.dropped == {"agent_no_evp_proxy": 7, "intake_rejected": 2}, stats.dropped
    assert stats.conserved
