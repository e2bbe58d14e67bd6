"""Settings: arguments, OFREP_* environment fallbacks (ADR-0007), validation messages."""

from __future__ import annotations

import inspect
import logging

import pytest

from flageval import _settings
from flageval.ofrep import OFREPConfig, OFREPProvider


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad variable is logged once per process and value: each test sees its own line.
    monkeypatch.setattr(_settings, "_reported", set())


def test_the_constructor_takes_every_declared_setting_by_its_name_none_meaning_not_given() -> None:
    """The signature is the one second list of the settings' names (typed for users and
    mypy); it stays the declaration's, in order."""
    parameters = inspect.signature(OFREPProvider).parameters
    assert [n for n in parameters if n != "context"] == [
        d.name for d in _settings.declared(OFREPConfig)
    ]
    assert all(p.default is None for p in parameters.values())


def test_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFREP_ENDPOINT", "http://127.0.0.1:9/prefix/")
    monkeypatch.setenv("OFREP_HEADERS", "Authorization=Bearer%20abc,X-API-Key=k%3D1=2")
    monkeypatch.setenv("OFREP_TIMEOUT_MS", "2500")
    config = OFREPProvider().config
    assert str(config.bulk_url) == "http://127.0.0.1:9/prefix/ofrep/v1/evaluate/flags"
    assert dict(config.headers) == {"Authorization": "Bearer abc", "X-API-Key": "k=1=2"}
    assert config.timeout_s == 2.5


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFREP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OFREP_HEADERS", "X-From=env")
    monkeypatch.setenv("OFREP_TIMEOUT_MS", "2500")
    config = OFREPProvider(
        base_url="http://127.0.0.1:8", headers={"X-From": "arg"}, timeout_ms=100
    ).config
    assert config.base_url.port == 8
    assert dict(config.headers) == {"X-From": "arg"}
    assert config.timeout_s == 0.1


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OFREP_ENDPOINT", "OFREP_HEADERS", "OFREP_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    config = OFREPProvider(base_url="https://flags.example").config
    assert config.timeout_s == 10.0
    assert config.change_detection == "sse"
    assert config.poll_interval_s == 30.0  # while no stream is advertised or held
    assert config.inactivity_delay_s is None
    assert dict(config.headers) == {}
    assert (config.reconnect_min_s, config.reconnect_max_s) == (0.5, 30.0)
    assert (config.retry_min_s, config.retry_max_s) == (1.0, 60.0)
    assert (config.sse_read_timeout_s, config.stale_after_s, config.shutdown_timeout_s) == (
        60.0,
        30.0,
        5.0,
    )
    assert (config.event_debounce_s, config.event_fetch_interval_s) == (0.05, 0.25)
    assert (config.cache_mode, config.cache_ttl_s, config.cache_key_prefix) == (
        "local-cache-first",
        30 * 24 * 3600.0,
        None,
    )


def test_none_is_not_given_and_positional_arguments_still_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OFREP_TIMEOUT_MS", "2500")
    config = OFREPProvider("http://127.0.0.1:9", None, None, "polling", 0.5).config
    assert (config.timeout_s, config.change_detection, config.poll_interval_s) == (
        2.5,
        "polling",
        0.5,
    )


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "http://x/?q=1"}, "base_url"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"timeout_ms": -5}, "timeout_ms"),
        ({"timeout_ms": True}, "timeout_ms"),
        ({"change_detection": "push"}, "change_detection"),
        ({"change_detection": "polling", "poll_interval_s": 0}, "poll_interval_s"),
        ({"poll_interval_s": -1}, "poll_interval_s"),
        ({"poll_interval_s": float("nan")}, "poll_interval_s"),
        ({"inactivity_delay_s": 0}, "inactivity_delay_s"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
        ({"headers": {"X": "a\r\nInjected: 1"}}, "headers"),
        ({"reconnect_min_s": 2, "reconnect_max_s": 1}, "reconnect_max_s"),
        ({"sse_read_timeout_s": 0}, "sse_read_timeout_s"),
        ({"context": {"targetingKey": "x"}}, "context"),
    ],
)
def test_invalid_settings_name_the_setting(kwargs: dict[str, object], setting: str) -> None:
    kwargs = {"base_url": "http://127.0.0.1:1", **kwargs}
    with pytest.raises(ValueError, match=setting):
        OFREPProvider(**kwargs)  # type: ignore[arg-type]


def test_missing_endpoint_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OFREP_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="OFREP_ENDPOINT"):
        OFREPProvider()


@pytest.mark.parametrize(
    ("name", "value", "setting", "default"),
    [
        ("OFREP_TIMEOUT_MS", "ten", "timeout_s", 10.0),
        ("OFREP_TIMEOUT_MS", "-5", "timeout_s", 10.0),
        ("OFREP_CACHE_MODE", "sometimes", "cache_mode", "local-cache-first"),
        ("OFREP_CACHE_TTL_S", "a month", "cache_ttl_s", 30 * 24 * 3600.0),
        ("OFREP_CACHE_TTL_S", "0", "cache_ttl_s", 30 * 24 * 3600.0),
    ],
)
def test_an_invalid_environment_value_is_logged_naming_it_and_the_default_used(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    name: str,
    value: str,
    setting: str,
    default: object,
) -> None:
    # An operator's typo must not stop the application from starting (as for FLAGEVAL_*).
    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.ERROR, logger="flageval.ofrep"):
        provider = OFREPProvider(base_url="http://127.0.0.1:1")
    assert getattr(provider.config, setting) == default
    (record,) = [r for r in caplog.records if r.name == "flageval.ofrep"]
    assert record.levelno == logging.ERROR and name in record.getMessage()
    assert "using the default" in record.getMessage()


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [({"timeout_ms": 0}, "timeout_ms"), ({"cache_mode": "sometimes"}, "cache_mode")],
)
def test_an_invalid_argument_still_raises_naming_it(
    kwargs: dict[str, object], setting: str
) -> None:
    with pytest.raises(ValueError, match=setting):
        OFREPProvider(base_url="http://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]


def test_constructing_a_provider_starts_no_thread() -> None:
    import threading

    before = threading.active_count()
    OFREPProvider(base_url="http://127.0.0.1:1")
    assert threading.active_count() == before


HUGE = "-1" + "0" * 400


@pytest.mark.parametrize(
    "raw",
    [HUGE, HUGE[1:], "9" * 5000, "x" * 1_000_000],
    ids=["-1e400", "1e400", "5000 nines", "1 MB"],
)
@pytest.mark.parametrize("name", ["OFREP_TIMEOUT_MS", "OFREP_CACHE_TTL_S", "OFREP_CACHE_MODE"])
def test_an_unusable_environment_value_of_any_size_is_logged_by_a_short_prefix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str, raw: str
) -> None:
    monkeypatch.setenv(name, raw)
    with caplog.at_level(logging.ERROR, logger="flageval.ofrep"):
        OFREPProvider(base_url="http://127.0.0.1:1")  # never raises from the environment
    (message,) = [r.getMessage() for r in caplog.records if r.name == "flageval.ofrep"]
    assert message.startswith(name) and "using the default" in message, message[:200]
    assert raw[:64] in message and raw[:65] not in message and len(message) < 400


NUMERIC_ARGUMENTS = [
    "timeout_ms",
    "poll_interval_s",
    "inactivity_delay_s",
    "sse_read_timeout_s",
    "reconnect_min_s",
    "reconnect_max_s",
    "retry_min_s",
    "retry_max_s",
    "stale_after_s",
    "shutdown_timeout_s",
    "event_debounce_s",
    "event_fetch_interval_s",
    "cache_ttl_s",
]


@pytest.mark.parametrize("name", NUMERIC_ARGUMENTS)
@pytest.mark.parametrize(
    "value",
    [-(10**400), 10**400, 10**5000, float("inf")],
    ids=["-10^400", "10^400", "10^5000", "inf"],
)
def test_a_huge_argument_is_a_value_error_naming_it(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be ") as raised:
        OFREPProvider(base_url="http://127.0.0.1:1", **{name: value})  # type: ignore[arg-type]
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    "name",
    [
        "poll_interval_s",
        "reconnect_min_s",
        "reconnect_max_s",
        "retry_min_s",
        "retry_max_s",
        "event_fetch_interval_s",
        "inactivity_delay_s",
    ],
)
def test_an_interval_below_its_floor_is_a_value_error(name: str) -> None:
    kwargs: dict[str, object] = {name: 1e-9}
    if name == "reconnect_max_s":
        kwargs["reconnect_min_s"] = 0.01
    if name == "retry_max_s":
        kwargs["retry_min_s"] = 0.01
    with pytest.raises(ValueError, match=f"^{name} must be "):
        OFREPProvider(base_url="http://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
