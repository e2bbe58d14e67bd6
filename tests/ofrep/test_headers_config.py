"""OFREP_HEADERS by the ADR-0007 amendment; secrets never echoed or printed."""

from __future__ import annotations

import logging

import pytest

from flageval.ofrep import OFREPProvider

URL = "http://127.0.0.1:1"


def headers_from_env(monkeypatch: pytest.MonkeyPatch, raw: str) -> dict[str, str]:
    monkeypatch.setenv("OFREP_HEADERS", raw)
    return dict(OFREPProvider(base_url=URL).config.headers)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # 1. decode the whole string first, 3. split on the first '=' only
        ("A%3Db=c", {"A": "b=c"}),
        ("Authorization=Bearer%20abc", {"Authorization": "Bearer abc"}),
        # 2. a %2C is decoded before the split: it separates entries
        ("X-API-Key=k%2CY=2", {"X-API-Key": "k", "Y": "2"}),
        ("X-Token=a=b==", {"X-Token": "a=b=="}),
        # 4. both sides trimmed, also once decoded
        ("%20X%20=%20v%20 , Y = w", {"X": "v", "Y": "w"}),
        ("a=1,,b=2,", {"a": "1", "b": "2"}),
        ("", {}),
    ],
)
def test_the_amendment_algorithm(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: dict[str, str]
) -> None:
    assert headers_from_env(monkeypatch, raw) == expected


def test_malformed_entries_are_skipped_with_a_warning_naming_position_and_reason(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flageval.ofrep")
    raw = "novalue-SECRET1,Authorization: Bearer SECRET2,=SECRET3,Good=1,Bad Name=SECRET4"
    # Never fails initialization: the good entry is kept.
    assert headers_from_env(monkeypatch, raw) == {"Good": "1"}
    messages = [r.getMessage() for r in caplog.records if r.name == "flageval.ofrep"]
    assert len(messages) == 4
    for position, message in zip((1, 2, 3, 5), messages, strict=True):
        assert f"OFREP_HEADERS: entry {position} skipped" in message
    assert "no '='" in messages[0] and "no '='" in messages[1]
    assert "empty" in messages[2]
    text = " ".join(messages)
    for secret in ("SECRET", "Bearer", "novalue", "Authorization", "Bad Name"):
        assert secret not in text


def test_a_header_value_with_a_line_break_is_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flageval.ofrep")
    assert headers_from_env(monkeypatch, "X=a%0D%0AInjected: 1,Y=2") == {"Y": "2"}
    assert "line break" in caplog.text and "Injected" not in caplog.text


def test_argument_header_errors_name_the_entry_not_its_text() -> None:
    with pytest.raises(ValueError) as info:
        OFREPProvider(base_url=URL, headers={"Authorization: Bearer SECRET...": "x"})
    assert "entry 1" in str(info.value)
    assert "SECRET" not in str(info.value) and "Authorization" not in str(info.value)
    with pytest.raises(ValueError) as info:
        OFREPProvider(base_url=URL, headers={"X": "ok", "Y": "SECRET\r\nZ: 1"})
    assert "entry 2" in str(info.value) and "SECRET" not in str(info.value)


def test_repr_of_the_config_hides_credentials() -> None:
    provider = OFREPProvider(
        base_url="https://user:PASSWORD@flags.example/prefix",
        headers={"X-Tenant": "TOKEN1", "X-API-Key": "TOKEN2", "X-Other": "TOKEN3"},
    )
    for text in (repr(provider.config), str(provider.config)):
        for secret in ("PASSWORD", "TOKEN1", "TOKEN2", "TOKEN3", "user:"):
            assert secret not in text
        assert "flags.example/prefix" in text
        assert "X-API-Key" in text  # names stay: they say what is configured


def test_an_invalid_base_url_error_does_not_echo_it() -> None:
    with pytest.raises(ValueError) as info:
        OFREPProvider(base_url="ftp://user:PASSWORD@flags.example")
    assert "PASSWORD" not in str(info.value)
    with pytest.raises(ValueError) as info:
        OFREPProvider(base_url="http://user:PASSWORD@flags.example/?token=SECRET")
    assert "PASSWORD" not in str(info.value) and "SECRET" not in str(info.value)


def test_a_million_malformed_entries_make_eleven_warnings_not_a_million(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="flageval.ofrep"):
        assert headers_from_env(monkeypatch, "secret," * 1_000_000 + "X=1") == {"X": "1"}
    said = [r.getMessage() for r in caplog.records if r.name == "flageval.ofrep"]
    assert said[:2] == [
        "OFREP_HEADERS: entry 1 skipped: it has no '='",
        "OFREP_HEADERS: entry 2 skipped: it has no '='",
    ]
    assert said[10:] == ["OFREP_HEADERS: 999990 more malformed entries skipped"]
    assert not any("secret" in m for m in said)
