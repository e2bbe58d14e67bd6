"""The environment cannot crash an application: a bad value is logged once at ERROR,
naming the variable and what was expected, and its default is used; with no safe
default (where counts go) the pipeline turns itself off, evaluations unaffected. The
killswitch is read first, by Datadog's convention, and off means nothing else is read
or imported."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

import flageval
from flageval import FlagEvalHook, Telemetry
from flageval import _settings as settings_module
from flageval._config import KILLSWITCH_ENV, Settings

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Once per process" must not hide a test's own message behind an earlier test's.
    monkeypatch.setattr(settings_module, "_reported", set())


def errors(caplog: pytest.LogCaptureFixture, level: int = logging.ERROR) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flageval" and r.levelno == level]


@pytest.mark.parametrize(
    ("var", "raw", "field", "default", "expected"),
    [
        (
            "FLAGEVAL_QUEUE_SIZE",
            "-5",
            "queue_size",
            65_536,
            "must be an integer > 0 and <= 10^15, got '-5'",
        ),
        ("FLAGEVAL_QUEUE_SIZE", "lots", "queue_size", 65_536, "must be an integer > 0"),
        ("FLAGEVAL_QUEUE_SIZE", "1.5", "queue_size", 65_536, "must be an integer > 0"),
        ("FLAGEVAL_FLUSH_INTERVAL_S", "nan", "flush_interval_s", 10.0, "a number >= 0.01 and"),
        ("FLAGEVAL_REQUEST_TIMEOUT_S", "1e10", "request_timeout_s", 5.0, "> 0 and <= 86400"),
        ("FLAGEVAL_SHUTDOWN_TIMEOUT_S", "-1", "shutdown_timeout_s", 5.0, "a number >= 0"),
        ("FLAGEVAL_MAX_BODY_BYTES", "100", "max_body_bytes", 5 * 2**20, "an integer >= 1024"),
        ("FLAGEVAL_MAX_RETRIES", "-1", "max_retries", 3, "must be an integer >= 0"),
        ("FLAGEVAL_VERIFY_TLS", "maybe", "verify_tls", True, "must be one of true, false"),
        ("FLAGEVAL_AGENTLESS", "sure", "agentless", False, "must be one of true, false"),
        # Valid alone, but one body must fit in the retry buffer.
        ("FLAGEVAL_RETRY_BUFFER_BYTES", "2048", "retry_buffer_bytes", 16 * 2**20, "max_body"),
        ("DD_SERVICE", "caf\udcff", "service", "pytest", "is not valid UTF-8 text"),
        ("DD_ENV", "\udcff", "env", None, "is not valid UTF-8 text"),
    ],
)
def test_a_bad_value_is_logged_once_naming_the_variable_and_the_default_is_used(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    var: str,
    raw: str,
    field: str,
    default: object,
    expected: str,
) -> None:
    monkeypatch.setattr(sys, "argv", ["/srv/pytest"])
    caplog.set_level(logging.DEBUG, logger="flageval")
    for _ in range(3):  # three pipelines from one environment: one message
        settings = Settings.from_env({var: raw})
    assert settings.enabled is True
    assert getattr(settings, field) == default
    (message,) = errors(caplog)
    assert message.startswith(var), message  # the logger's name says flageval
    assert expected in message and "using the default" in message, message


@pytest.mark.parametrize("port", ["http", "\u00b2", "\u0661\u0662", "0", "65536", "80a"])
def test_a_bad_agent_port_names_the_variable_and_keeps_8126(
    caplog: pytest.LogCaptureFixture, port: str
) -> None:
    settings = Settings.from_env({"DD_AGENT_HOST": "agent", "DD_TRACE_AGENT_PORT": port})
    assert settings.enabled and settings.agent_url == "http://agent:8126"
    (message,) = errors(caplog)
    assert f"DD_TRACE_AGENT_PORT must be a port number from 1 to 65535, got {port!r}" in message


def test_a_good_agent_port() -> None:
    assert Settings.from_env({"DD_TRACE_AGENT_PORT": "9126"}).agent_url == "http://localhost:9126"


@pytest.mark.parametrize(
    ("env", "shown"),
    [
        # Not mangled into "localhost://8126" by the redaction.
        (
            {"DD_TRACE_AGENT_URL": "localhost:8126"},
            "DD_TRACE_AGENT_URL must be an http://, "
            "https:// or unix:// URL with a host, got 'localhost:8126'",
        ),
        # Not "<unparseable url>".
        (
            {"DD_AGENT_HOST": "http://myagent"},
            "DD_AGENT_HOST must be a host name or an IP "
            "address (a URL goes in DD_TRACE_AGENT_URL), got 'http://myagent'",
        ),
        ({"DD_TRACE_AGENT_URL": "unix://relative.sock"}, "absolute socket path"),
        ({"DD_TRACE_AGENT_URL": "ftp://agent:21"}, "got 'ftp://agent:21'"),
        ({"DD_TRACE_AGENT_URL": "http://agent:99999"}, "got 'http://agent:99999'"),
        (
            {"FLAGEVAL_INTAKE_URL": "gopher://x/in"},
            "FLAGEVAL_INTAKE_URL must be an http:// or "
            "https:// URL with a host, got 'gopher://x/in'",
        ),
        ({"FLAGEVAL_AGENTLESS": "true"}, "agentless needs DD_API_KEY"),
    ],
)
def test_where_counts_go_has_no_safe_default_so_the_pipeline_turns_itself_off(
    caplog: pytest.LogCaptureFixture, env: dict[str, str], shown: str
) -> None:
    settings = Settings.from_env(env)
    assert settings.enabled is False
    (message,) = errors(caplog)
    assert shown in message, message
    assert message.endswith("; evaluation telemetry is off"), message
    assert "unparseable" not in message and "localhost://" not in message


@pytest.mark.parametrize(("agentless", "enabled"), [("false", True), ("true", False)])
def test_a_bad_dd_site_turns_telemetry_off_only_when_agentless_is_on(
    caplog: pytest.LogCaptureFixture, agentless: str, enabled: bool
) -> None:
    # DD_SITE decides where counts go only in agentless mode: FLAGEVAL_AGENTLESS=false
    # (set, but off) must not make a bad site fatal.
    env = {"DD_SITE": "not a host", "FLAGEVAL_AGENTLESS": agentless, "DD_API_KEY": "k"}
    settings = Settings.from_env(env)
    assert settings.enabled is enabled
    (message,) = errors(caplog)
    assert message.startswith("DD_SITE must be a site's host name"), message
    assert message.endswith("evaluation telemetry is off" if not enabled else "'datadoghq.com'")


def test_an_unusable_url_in_the_environment_never_shows_its_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "http://user:s3cret-pw@[::1/?token=s3cret-token"
    assert Settings.from_env({"DD_TRACE_AGENT_URL": url}).enabled is False
    (message,) = errors(caplog)
    assert "s3cret" not in message and "'http://[::1/'" in message, message


def test_unix_socket_agent_from_the_environment_is_accepted() -> None:
    settings = Settings.from_env({"DD_TRACE_AGENT_URL": "unix:///var/run/datadog/apm.socket"})
    assert settings.enabled
    assert settings.endpoint().unix_socket == "/var/run/datadog/apm.socket"


def test_a_bad_environment_never_breaks_the_application(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What took a whole gunicorn service down ("Worker failed to boot"): the one-line
    setup at import with a typo in the environment. Now the hook is built, the pipeline
    is off with one ERROR, and every evaluation returns its value as without the hook."""
    monkeypatch.delenv(KILLSWITCH_ENV, raising=False)
    monkeypatch.setenv("DD_TRACE_AGENT_URL", "localhost:8126")
    monkeypatch.setenv("FLAGEVAL_QUEUE_SIZE", "-5")
    hook = FlagEvalHook()  # the README's line: no exception
    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": 1, "off": 0})}))
    api.add_hooks([hook])
    client = api.get_client()
    values = [client.get_integer_value("f", -1, EvaluationContext(f"u{i}")) for i in range(100)]
    assert values == [1] * 100
    assert not flageval.default_telemetry().enabled
    assert flageval.stats().evaluations == 0
    assert [m.split(" must")[0] for m in errors(caplog)] == [
        "FLAGEVAL_QUEUE_SIZE",
        "DD_TRACE_AGENT_URL",
    ]


# -- the killswitch ------------------------------------------------------------------------


class Recording(Mapping[str, str]):
    """An environment that remembers which variables were read."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.read = values, set[str]()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.read.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the environment was listed")

    def __len__(self) -> int:
        return len(self.values)


@pytest.mark.parametrize("value", ["false", "FALSE", "0", " no ", "Off"])
def test_killswitch_off_reads_and_checks_nothing_else(
    caplog: pytest.LogCaptureFixture, value: str
) -> None:
    env = Recording(
        {KILLSWITCH_ENV: value, "FLAGEVAL_QUEUE_SIZE": "-5", "DD_TRACE_AGENT_URL": "ftp://x"}
    )
    caplog.set_level(logging.DEBUG, logger="flageval")
    assert Settings.from_env(env).enabled is False
    assert env.read == {KILLSWITCH_ENV}
    assert caplog.records == []  # a clear "off": no warning, and nothing else looked at


@pytest.mark.parametrize("value", ["disabled", "enabled", "yes", "on", "2", "tru"])
def test_killswitch_anything_but_true_or_1_is_off_with_a_warning(
    caplog: pytest.LogCaptureFixture, value: str
) -> None:
    env = Recording({KILLSWITCH_ENV: value, "FLAGEVAL_QUEUE_SIZE": "-5"})
    for _ in range(2):
        assert Settings.from_env(env).enabled is False
    assert env.read == {KILLSWITCH_ENV}
    (warning,) = errors(caplog, logging.WARNING)
    assert f"{KILLSWITCH_ENV}={value!r}" in warning and "off" in warning
    assert errors(caplog) == []


@pytest.mark.parametrize("value", ["true", "TRUE", " True ", "1"])
def test_killswitch_true_or_1_is_on(caplog: pytest.LogCaptureFixture, value: str) -> None:
    assert Settings.from_env({KILLSWITCH_ENV: value}).enabled is True
    assert caplog.records == []


def test_a_keyword_beats_the_killswitch_and_keywords_stay_strict_when_off() -> None:
    assert Settings.from_env({KILLSWITCH_ENV: "false"}, enabled=True).enabled is True
    with pytest.raises(
        ValueError, match="queue_size must be an integer > 0 and <= 10\\^15, got -5"
    ):
        Settings.from_env({KILLSWITCH_ENV: "false"}, queue_size=-5)
    with pytest.raises(ValueError, match="agent_url"):
        Settings.from_env({KILLSWITCH_ENV: "false"}, agent_url="localhost:8126")


# -- startup cost ---------------------------------------------------------------------------

IMPORTS = textwrap.dedent(
    """
    import json, sys
    import flageval
    seen = {"import": sorted(m for m in ("aiohttp", "msgspec", "flageval._worker")
                             if m in sys.modules)}
    from openfeature import api
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    api.set_provider(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    api.add_hooks([flageval.FlagEvalHook()])
    assert api.get_client().get_boolean_value("f", False) is True
    seen["evaluated"] = sorted(m for m in ("aiohttp", "msgspec", "flageval._worker")
                               if m in sys.modules)
    flageval.shutdown(2.0)
    print(json.dumps(seen))
    """
)


def _imports(killswitch: str) -> dict[str, list[str]]:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env.update({KILLSWITCH_ENV: killswitch, "DD_TRACE_AGENT_URL": "http://127.0.0.1:9"})
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_import_flageval_does_not_import_aiohttp_and_off_never_does() -> None:
    assert _imports("false") == {"import": [], "evaluated": []}


def test_aiohttp_is_imported_when_the_worker_first_starts() -> None:
    loaded = ["aiohttp", "flageval._worker", "msgspec"]
    assert _imports("true") == {"import": [], "evaluated": loaded}


# -- values that cannot hurt ----------------------------------------------------------------

HUGE = "-1" + "0" * 400  # int() reads it; a float of it overflows
INTEGERS = [
    "FLAGEVAL_QUEUE_SIZE",
    "FLAGEVAL_MAX_FULL_BUCKETS",
    "FLAGEVAL_MAX_BUCKETS_PER_FLAG",
    "FLAGEVAL_MAX_DEGRADED_BUCKETS",
    "FLAGEVAL_MEMORY_BUDGET_BYTES",
    "FLAGEVAL_MAX_BODY_BYTES",
    "FLAGEVAL_RETRY_BUFFER_BYTES",
    "FLAGEVAL_MAX_RETRIES",
]


@pytest.mark.parametrize("var", INTEGERS)
@pytest.mark.parametrize("raw", [HUGE, HUGE[1:], "9" * 5000], ids=["-1e400", "1e400", "5000 nines"])
def test_a_number_of_hundreds_of_digits_is_logged_and_the_hook_is_built(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, var: str, raw: str
) -> None:
    monkeypatch.setenv(var, raw)
    monkeypatch.setenv("DD_TRACE_AGENT_URL", "http://127.0.0.1:9")
    FlagEvalHook()  # builds the process-wide pipeline from the environment: no exception
    tel = flageval.default_telemetry()
    assert tel.enabled
    (message,) = errors(caplog)
    assert message.startswith(f"{var} must be an integer"), message[:200]
    assert "using the default" in message and len(message) < 300, message[:300]


@pytest.mark.parametrize("port", ["9" * 5000, "1" + "0" * 5], ids=["5000 nines", "100000"])
def test_an_agent_port_of_thousands_of_digits_keeps_8126(
    caplog: pytest.LogCaptureFixture, port: str
) -> None:
    settings = Settings.from_env({"DD_AGENT_HOST": "agent", "DD_TRACE_AGENT_PORT": port})
    assert settings.enabled and settings.agent_url == "http://agent:8126"
    (message,) = errors(caplog)
    assert message.startswith("DD_TRACE_AGENT_PORT must be a port number") and len(message) < 300


#: Every variable a pipeline reads, with the logger level its bad value is said at.
EVERY_VARIABLE = [
    *INTEGERS,
    "FLAGEVAL_FLUSH_INTERVAL_S",
    "FLAGEVAL_DRAIN_INTERVAL_S",
    "FLAGEVAL_REQUEST_TIMEOUT_S",
    "FLAGEVAL_SHUTDOWN_TIMEOUT_S",
    "FLAGEVAL_RETRY_BACKOFF_S",
    "FLAGEVAL_AGENTLESS",
    "FLAGEVAL_FULL_DATA_DEFAULT",
    "FLAGEVAL_VERIFY_TLS",
    "FLAGEVAL_INTAKE_URL",
    "DD_SITE",
    "DD_TRACE_AGENT_URL",
    "DD_AGENT_HOST",
    "DD_TRACE_AGENT_PORT",
    KILLSWITCH_ENV,
]


@pytest.mark.parametrize("var", EVERY_VARIABLE)
def test_a_megabyte_value_is_quoted_by_a_short_prefix(
    caplog: pytest.LogCaptureFixture, var: str
) -> None:
    raw = "x" * 1_000_000 + "\n"
    env = {var: raw}
    if var == "DD_SITE":  # where counts go only when agentless
        env.update(FLAGEVAL_AGENTLESS="true", DD_API_KEY="k")
    caplog.set_level(logging.DEBUG, logger="flageval")
    Settings.from_env(env)  # never raises
    said = [r.getMessage() for r in caplog.records if r.name.startswith("flageval")]
    assert said, var
    assert all(var in m and "x" * 64 in m and "x" * 65 not in m for m in said), said[0][:300]
    assert max(len(m) for m in said) < 400


@pytest.mark.parametrize("var", ["FLAGEVAL_FLUSH_INTERVAL_S", "FLAGEVAL_DRAIN_INTERVAL_S"])
@pytest.mark.parametrize("raw", ["1e-9", "0.0001", "5e-324"])
def test_a_period_below_its_floor_is_logged_and_the_pipeline_runs_at_its_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, var: str, raw: str
) -> None:
    """A drain every nanosecond turned the idle worker into a busy loop: below its floor
    (1 ms for the drain, 10 ms for the flush) a period is refused like any unusable
    value, so the pipeline's effective period is the default."""
    monkeypatch.setenv(var, raw)
    tel = Telemetry(agent_url="http://127.0.0.1:9", autostart=False)
    try:
        assert (tel.settings.drain_interval_s, tel.settings.flush_interval_s) == (0.05, 10.0)
    finally:
        tel.shutdown(0)
    (message,) = errors(caplog)
    floor = "0.001" if "DRAIN" in var else "0.01"
    assert message == (
        f"{var} must be a number >= {floor} and <= 86400, got {raw!r}; using the default "
        f"{0.05 if 'DRAIN' in var else 10.0}"
    )


@pytest.mark.parametrize(
    ("var", "floor"), [("FLAGEVAL_FLUSH_INTERVAL_S", 0.01), ("FLAGEVAL_DRAIN_INTERVAL_S", 0.001)]
)
def test_a_period_at_its_floor_is_taken(
    monkeypatch: pytest.MonkeyPatch, var: str, floor: float
) -> None:
    monkeypatch.setenv(var, str(floor))
    settings = Settings.from_env()
    assert getattr(settings, var.removeprefix("FLAGEVAL_").lower()) == floor


def test_an_agent_port_with_leading_zeros_is_its_number() -> None:
    env = {"DD_AGENT_HOST": "agent", "DD_TRACE_AGENT_PORT": "0" * 4000 + "9126"}
    assert Settings.from_env(env).agent_url == "http://agent:9126"
