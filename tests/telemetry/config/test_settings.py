"""Settings: keyword arguments over env vars over defaults; clear errors; the endpoint."""

from __future__ import annotations

import pytest

from flageval._common import redact_url
from flageval._config import INTAKE_PATH, Settings


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.enabled is True
    assert s.flush_interval_s == 10.0
    assert s.queue_size == 65_536
    assert (s.max_full_buckets, s.max_buckets_per_flag, s.max_degraded_buckets) == (
        131_072,
        10_000,
        32_768,
    )
    assert s.max_body_bytes == 5 * 1024 * 1024
    assert s.memory_budget_bytes == 64 * 1024 * 1024
    assert s.full_data_default is True
    assert s.verify_tls is True
    assert s.endpoint().url == "http://localhost:8126" + INTAKE_PATH


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({"DD_TRACE_AGENT_URL": "http://agent:9000"}, "http://agent:9000" + INTAKE_PATH),
        ({"DD_TRACE_AGENT_URL": "https://agent/"}, "https://agent" + INTAKE_PATH),
        ({"DD_AGENT_HOST": "10.1.2.3"}, "http://10.1.2.3:8126" + INTAKE_PATH),
        ({"DD_AGENT_HOST": "h", "DD_TRACE_AGENT_PORT": "1234"}, "http://h:1234" + INTAKE_PATH),
        ({"DD_AGENT_HOST": "::1"}, "http://[::1]:8126" + INTAKE_PATH),
        # DD_TRACE_AGENT_URL wins over host/port.
        ({"DD_TRACE_AGENT_URL": "http://a:1", "DD_AGENT_HOST": "b"}, "http://a:1" + INTAKE_PATH),
    ],
)
def test_agent_url_by_the_datadog_convention(env: dict[str, str], url: str) -> None:
    assert Settings.from_env(env).endpoint().url == url


def test_unix_socket_agent() -> None:
    ep = Settings.from_env({"DD_TRACE_AGENT_URL": "unix:///var/run/datadog/apm.socket"}).endpoint()
    assert ep.unix_socket == "/var/run/datadog/apm.socket"
    assert ep.url.endswith(INTAKE_PATH)


def test_required_headers() -> None:
    headers = Settings.from_env({}).endpoint().headers
    assert headers == {
        "Content-Type": "application/json",
        "X-Datadog-EVP-Subdomain": "event-platform-intake",
    }


def test_agentless_uses_site_and_api_key_header() -> None:
    s = Settings.from_env({"DD_API_KEY": "k-123", "DD_SITE": "datadoghq.eu"}, agentless=True)
    ep = s.endpoint()
    assert ep.url == "https://event-platform-intake.datadoghq.eu/api/v2/flagevaluation"
    assert ep.headers["DD-API-KEY"] == "k-123"
    assert "k-123" not in repr(s) and "k-123" not in repr(ep)


def test_agentless_without_key_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="agentless requires api_key"):
        Settings.from_env({}, agentless=True)


def test_keyword_beats_env_beats_default() -> None:
    env = {"FLAGEVAL_QUEUE_SIZE": "100", "DD_SERVICE": "from-env", "DD_ENV": "prod"}
    s = Settings.from_env(env, queue_size=7)
    assert s.queue_size == 7
    assert s.service == "from-env"
    assert s.env == "prod"
    assert s.version is None


def test_service_defaults_to_the_program_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/srv/app/billing_worker.py"])
    assert Settings.from_env({}).service == "billing_worker"


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"queue_size": 0}, {}, "queue_size"),
        ({"queue_size": 1.5}, {}, "queue_size"),
        ({"flush_interval_s": -1}, {}, "flush_interval_s"),
        ({"flush_interval_s": float("nan")}, {}, "flush_interval_s"),
        ({"max_body_bytes": 100}, {}, "max_body_bytes"),
        ({"retry_buffer_bytes": 4096, "max_body_bytes": 8192}, {}, "retry_buffer_bytes"),
        ({"memory_budget_bytes": True}, {}, "memory_budget_bytes"),
        ({"service": ""}, {}, "service"),
        ({"agent_url": "ftp://x"}, {}, "agent_url"),
        ({"agent_url": "unix://relative.sock"}, {}, "agent_url"),
        ({"agent_url": "localhost:8126"}, {}, "agent_url must be an http://, https:// or unix://"),
        ({"intake_url": "unix:///a.sock"}, {}, "intake_url must be an http:// or https:// URL"),
        ({"agentless": True, "api_key": "k", "site": "bad site/"}, {}, "site"),
        ({"verify_tls": "false"}, {}, "verify_tls must be a bool"),
        # A keyword is strict even when the environment could have supplied a default.
        ({"queue_size": -5}, {"FLAGEVAL_QUEUE_SIZE": "7"}, "queue_size must be an integer > 0"),
    ],
)
def test_invalid_keywords_raise_value_error_naming_the_setting(
    kwargs: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env, **kwargs)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="flush_interval"):
        Settings.from_env({}, flush_interval=3)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host:8443/p/a?token=s3cret#frag", "https://host:8443/p/a"),
        # Not URLs, or not whole ones: shown as written, minus secrets, never mangled.
        ("localhost:8126", "localhost:8126"),
        ("http://myagent", "http://myagent"),
        ("user:pw@agent:8126", "agent:8126"),
        ("http://user:pa/ss@host/x", "http://host/x"),  # a "/" in the password
        ("http://u:p@[::1/?t=1", "http://[::1/"),
        ("unix:///var/run/datadog/apm.socket", "unix:///var/run/datadog/apm.socket"),
        ("http://h/a\nb", "http://h/a?b"),
    ],
)
def test_redact_url_drops_userinfo_query_and_fragment(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_settings_repr_never_shows_url_secrets() -> None:
    s = Settings.from_env({}, agent_url="http://user:pw@agent:8126/?token=s3cret")
    assert "s3cret" not in repr(s) and "pw" not in repr(s)
    assert "s3cret" not in s.endpoint().display


NUMERIC_KEYWORDS = [
    "flush_interval_s",
    "drain_interval_s",
    "request_timeout_s",
    "shutdown_timeout_s",
    "retry_backoff_s",
    "queue_size",
    "max_full_buckets",
    "max_buckets_per_flag",
    "max_degraded_buckets",
    "memory_budget_bytes",
    "max_body_bytes",
    "retry_buffer_bytes",
    "max_retries",
]


@pytest.mark.parametrize("name", NUMERIC_KEYWORDS)
@pytest.mark.parametrize(
    "value",
    [-(10**400), 10**400, 10**5000, 1e300, float("inf")],
    ids=["-10^400", "10^400", "10^5000", "1e300", "inf"],
)
def test_a_huge_keyword_number_is_a_value_error_naming_the_setting(
    name: str, value: object
) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be ") as raised:
        Settings.from_env({}, **{name: value})  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("name", ["flush_interval_s", "drain_interval_s"])
def test_an_interval_below_its_floor_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a number >= 0.0"):
        Settings.from_env({}, **{name: 1e-9})  # type: ignore[arg-type]
