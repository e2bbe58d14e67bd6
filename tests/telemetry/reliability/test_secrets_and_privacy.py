"""Security: secrets and URL tokens never leak (logs at every level, during failures;
exception texts; reprs), TLS is verified by default, and bodies never carry the flag's
value, the reason, pruned attributes, or (without consent) the raw targeting key or
any context."""

from __future__ import annotations

import hashlib
import logging
import pathlib
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider.in_memory_provider import InMemoryFlag

from flageval import Settings, Telemetry
from tests.intake import Behaviour, Intake
from tests.telemetry.reliability.helpers import FLAG, client_with, flags

pytestmark = pytest.mark.reliability

SECRET = "SECRET-MARKER-4f1e"
TOKEN = "TOKENMARKER-9b2c"
PASSWORD = "PWMARKER-77aa"
LEAKS = (SECRET, TOKEN, PASSWORD)


def _no_leak(text: str, where: str) -> None:
    for marker in LEAKS:
        assert marker not in text, f"{marker} leaked in {where}"


def _exercise(tel: Telemetry, intake: Intake | None) -> None:
    client = client_with(tel)
    for round_no, fault in enumerate(
        [
            Behaviour(status=500),
            Behaviour(status=400),
            Behaviour(action="reset"),
            Behaviour(action="garbage"),
            Behaviour(status=429, headers={"Retry-After": "0"}),
        ]
    ):
        if intake is not None:
            intake.script(fault)
        client.get_boolean_value(FLAG, False, EvaluationContext(f"s{round_no}", {}))
        tel.flush(10.0)


def test_agentless_key_sent_as_header_never_logged_or_shown(intake: Intake, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    tel = Telemetry(
        agentless=True,
        api_key=SECRET,
        intake_url=f"{intake.url}/api/v2/flagevaluation?token={TOKEN}",
        service="rel-sec",
        flush_interval_s=60.0,
        max_retries=1,
        retry_backoff_s=0.01,
        request_timeout_s=5.0,
    )
    try:
        _exercise(tel, intake)
        shown = [
            repr(tel),
            str(tel),
            repr(tel.settings),
            str(tel.settings),
            repr(tel.settings.endpoint()),
            repr(tel.stats()),
        ]
        intake.stop()  # now the intake is down: connection refused during shutdown
        tel.shutdown(1.0)
    finally:
        tel.shutdown(0.5)
    assert intake.received, "nothing was posted"
    assert all(r.headers.get("DD-API-KEY") == SECRET for r in intake.received)
    for text in shown:
        _no_leak(text, "repr")
    assert caplog.records, "the failures logged nothing at all"
    _no_leak(caplog.text, "logs")
    for rec in caplog.records:
        _no_leak(rec.getMessage(), "log message")
        if rec.exc_info:
            _no_leak(logging.Formatter().formatException(rec.exc_info), "logged exception")


def test_a_rejection_logs_a_bounded_snippet_without_the_key(intake: Intake, caplog: Any) -> None:
    """The intake's error text helps (why a 400), but only 200 characters of it, on one
    line, read from at most 1 KiB, and never with our API key should it be echoed."""
    caplog.set_level(logging.DEBUG)
    echoed = f'{{"errors":["bad payload","key {SECRET} rejected"]}}' + "\n" + "z" * 5000
    intake.script(Behaviour(status=400, text=echoed))
    tel = Telemetry(
        agentless=True,
        api_key=SECRET,
        intake_url=intake.url + "/api/v2/flagevaluation",
        service="rel-sec",
        flush_interval_s=60.0,
    )
    try:
        client = client_with(tel)
        client.get_boolean_value(FLAG, False, EvaluationContext("s", {}))
        assert tel.flush(3.0)
    finally:
        tel.shutdown(1.0)
    (line,) = [r.getMessage() for r in caplog.records if "intake_rejected" in r.getMessage()]
    assert 'bad payload","key <redacted> rejected' in line
    assert "\n" not in line and "z" * 201 not in line
    _no_leak(caplog.text, "logs")
    assert tel.stats().dropped == {"intake_rejected": 1}


def test_agent_url_credentials_and_query_never_logged(intake: Intake, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://user:{PASSWORD}@127.0.0.1:{intake.port}/?token={TOKEN}"
    tel = Telemetry(
        agent_url=url,
        service="rel-sec",
        flush_interval_s=60.0,
        max_retries=1,
        retry_backoff_s=0.01,
        request_timeout_s=5.0,
    )
    try:
        _exercise(tel, intake)
        shown = [repr(tel), repr(tel.settings), repr(tel.settings.endpoint())]
        tel.shutdown(1.0)
    finally:
        tel.shutdown(0.5)
    # The agent's URL is a base: the intake path goes after its path, not into the query.
    assert intake.received and intake.accepted()
    for text in shown:
        _no_leak(text, "repr")
    _no_leak(caplog.text, "logs")


@pytest.mark.parametrize(
    "settings",
    [
        {"agent_url": f"ftp://user:{PASSWORD}@host/?token={TOKEN}"},
        {"agent_url": f"http://user:{PASSWORD}@[::1/?token={TOKEN}"},
        {"agent_url": f"http://user:{PASSWORD}@host:99999/?token={TOKEN}"},
        {"agentless": True, "api_key": SECRET, "intake_url": f"gopher://x/?token={TOKEN}"},
        {"agentless": True, "api_key": SECRET, "flush_interval_s": -1},
    ],
)
def test_configuration_errors_do_not_echo_secrets(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as info:
        Settings.from_env({}, **settings)
    _no_leak(str(info.value), "exception")
    _no_leak(repr(info.value), "exception repr")


@pytest.fixture(scope="module")
def tls_files() -> Iterator[tuple[pathlib.Path, pathlib.Path]]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="reliability_tls_", dir="/tmp"))
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield cert, key
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("verify", [None, False])
def test_tls_is_verified_by_default(
    tls_files: tuple[pathlib.Path, pathlib.Path], verify: bool | None
) -> None:
    """Against a self-signed https intake: the default refuses the certificate (nothing
    is sent); ``verify_tls=False``, the explicit opt-out, delivers."""
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    intake = Intake(ssl_context=ctx).start()
    extra = {} if verify is None else {"verify_tls": verify}
    tel = Telemetry(
        agent_url=intake.url, service="rel-tls", flush_interval_s=60.0, max_retries=0, **extra
    )
    try:
        assert intake.url.startswith("https://")
        client = client_with(tel)
        for i in range(5):
            client.get_boolean_value(FLAG, False, EvaluationContext(f"tls-{i}", {}))
        delivered = tel.flush(3.0)
        tel.shutdown(5.0)  # its final try fails at once: well before the deadline
    finally:
        tel.shutdown(0.5)
        intake.stop()
    st = tel.stats()
    if verify is None:
        assert delivered is False
        assert intake.received == []  # no body went over the unverified connection
        assert st.dropped == {"intake_unavailable": 5}
    else:
        assert delivered is True
        assert intake.evaluations() == 5 and st.dropped == {}


def test_an_untrusted_certificate_is_said_once_for_what_it_is(
    tls_files: tuple[pathlib.Path, pathlib.Path], caplog: Any
) -> None:
    """One ERROR that names the cause (not trusted: self-signed), without the URL's
    credentials or query, and one try per flush (trying again at once cannot help)."""
    caplog.set_level(logging.DEBUG)
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    intake = Intake(ssl_context=ctx).start()
    url = f"https://user:{PASSWORD}@127.0.0.1:{intake.port}/?token={TOKEN}"
    tel = Telemetry(agent_url=url, service="rel-tls", flush_interval_s=60.0, max_retries=3)
    try:
        client = client_with(tel)
        for i in range(3):
            client.get_boolean_value(FLAG, False, EvaluationContext(f"tls-{i}", {}))
            assert tel.flush(3.0) is False
        attempts = tel.stats().post_attempts
        tel.shutdown(5.0)  # its final try fails at once: well before the deadline
    finally:
        tel.shutdown(0.5)
        intake.stop()
    assert intake.received == []
    assert attempts == 3  # one per flush, not 1 + max_retries each
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "certificate" in errors[0] and "not trusted" in errors[0]
    assert "self-signed" in errors[0] or "self signed" in errors[0]
    assert f"https://127.0.0.1:{intake.port}/" in errors[0]
    assert "connect_error" not in caplog.text
    _no_leak(caplog.text, "logs")
    assert tel.stats().dropped == {"intake_unavailable": 3}


def _raising_evaluator(flag: InMemoryFlag, ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    raise OpenFeatureError(ErrorCode.GENERAL, "ERRMSG-MARKER from the provider")


def _valued_evaluator(flag: InMemoryFlag, ctx: EvaluationContext) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails("VALUE-MARKER", variant="v1", reason="REASON-MARKER")


def _provider_flags(consent: Any = None) -> dict[str, InMemoryFlag]:
    meta = {} if consent is None else {"observe_full_evaluation_data": consent}
    return flags(
        valued=InMemoryFlag(
            "v1", {"v1": "VALUE-MARKER"}, flag_metadata=meta, context_evaluator=_valued_evaluator
        ),
        failing=InMemoryFlag(
            "v1", {"v1": "x"}, flag_metadata=meta, context_evaluator=_raising_evaluator
        ),
    )


def _marker_context() -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "a_keep": "KEPT-MARKER",
        "b_long": "LONG-MARKER" + "x" * 300,  # over 256 characters: skipped
        "LONGKEY-MARKER" + "k" * 300: "v",  # key over 256 characters: skipped
        "targetingKey": "TKATTR-MARKER",  # never an attribute
    }
    deep: Any = "DEEP-MARKER"
    for i in range(12):
        deep = {f"level{i}": deep}
    ctx["c_deep"] = deep  # past the depth bound
    for i in range(300):
        ctx[f"z{i:03d}"] = f"FIELD-MARKER-{i:03d}"  # only the first 256 fields survive
    return ctx


def _bodies(intake: Intake) -> str:
    return "\n".join(r.body.decode("utf-8") for r in intake.received if r.complete)


def test_bodies_never_carry_value_reason_or_pruned_attributes(
    make_telemetry: Any, intake: Intake
) -> None:
    tel = make_telemetry()  # full data by default
    client = client_with(tel, _provider_flags())
    ctx = EvaluationContext("TK-VISIBLE", _marker_context())
    assert client.get_string_value("valued", "d", ctx) == "VALUE-MARKER"
    client.get_string_value("failing", "d", ctx)
    assert tel.flush(3.0)
    text = _bodies(intake)
    # Sensitivity check: what pruning keeps is there.
    assert "KEPT-MARKER" in text and "TK-VISIBLE" in text and "FIELD-MARKER-000" in text
    for absent in (
        "VALUE-MARKER",
        "REASON-MARKER",
        "TARGETING_MATCH",
        "LONG-MARKER",
        "LONGKEY-MARKER",
        "DEEP-MARKER",
        "TKATTR-MARKER",
        '"reason"',
        '"value"',
    ):
        assert absent not in text, absent
    # Sorted keys: a_keep, c_deep.* (nothing, too deep), z000..; 256 fields in all.
    kept = [f"FIELD-MARKER-{i:03d}" for i in range(300) if f"FIELD-MARKER-{i:03d}" in text]
    assert kept == [f"FIELD-MARKER-{i:03d}" for i in range(255)]


@pytest.mark.parametrize("consent", [None, "true", 1, False])
def test_without_consent_no_raw_targeting_key_no_context(
    make_telemetry: Any, intake: Intake, consent: Any
) -> None:
    """full_data_default=False, and metadata that is not the boolean true: the body has
    the hashed targeting key, no context and the error code, never the message."""
    tel = make_telemetry(full_data_default=False)
    client = client_with(tel, _provider_flags(consent))
    tk = "jane.doe@datadoghq.com"
    ctx = EvaluationContext(tk, _marker_context() | {"nested": {"n": ["NESTED-MARKER"]}})
    client.get_string_value("valued", "d", ctx)
    client.get_string_value("failing", "d", ctx)
    client.get_boolean_value(FLAG, False, ctx)
    assert tel.flush(3.0)
    text = _bodies(intake)
    assert "MARKER" not in text, text[:500]
    assert tk not in text and "jane" not in text
    hashed = "sha256_" + hashlib.sha256(tk.encode()).hexdigest()
    assert hashed == "sha256_b4698f9b6d186781fa8dc59e533578fa2d8379a46b1cf6db85cda6aa9c99e51b"
    rows = intake.rows()
    assert len(rows) == 3
    assert all(row["targeting_key"] == hashed and "context" not in row for row in rows)
    (failed,) = [row for row in rows if row["flag"]["key"] == "failing"]
    assert failed["error"] == {"message": "GENERAL"}
