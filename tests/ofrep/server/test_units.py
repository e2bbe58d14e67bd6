"""The server's parts on their own: settings, fingerprints, the body cache, If-None-Match,
credentials; and the application mounted in another one, in this process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openfeature.evaluation_context import EvaluationContext

import flageval
from flageval.ofrep.server import ENV_API_KEYS, ServerOptions, create_app
from flageval.ofrep.server import _handlers as handlers
from flageval.ofrep.server._auth import Auth
from flageval.ofrep.server._cache import BodyCache, Cached
from flageval.ofrep.server._flagfile import FlagFileError, kind_of, parse
from flageval.ofrep.server._request import matches
from flageval.ofrep.server._views import Config

from .conftest import static


def source(
    flags: dict[str, Any], metadata: dict[str, Any] | None = None, name: str = "f.json"
) -> Any:
    doc: dict[str, Any] = (
        {"flags": flags} if metadata is None else {"flags": flags, "metadata": metadata}
    )
    return parse(Path(name), json.dumps(doc).encode(), 0)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"flags": ()}, "flags"),
        ({"port": 70000}, "port"),
        ({"cache_capacity": -1}, "cache_capacity"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"keepalive_s": 120.0}, "keepalive_s"),
        ({"inactivity_delay_s": 0}, "inactivity_delay_s"),
        ({"public_origin": "https://h.example/path"}, "public_origin"),
        ({"public_origin": "https://user:pw@h.example"}, "public_origin"),
        ({"api_keys": (" spaced ",)}, "api_keys"),
        ({"api_keys": ("",)}, "api_keys"),
    ],
)
def test_unusable_settings_are_refused_by_name(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ServerOptions(**{"flags": (Path("f.json"),), **settings})


def test_options_never_show_a_key() -> None:
    opts = ServerOptions(flags=(Path("f.json"),), api_keys=("top-secret",))
    assert "top-secret" not in repr(opts) and "<1 keys>" in repr(opts)


def test_fingerprints_depend_on_the_flags_not_on_paths_or_key_order() -> None:
    a = Config([source({"x": static(1), "y": static("a")}, {"flagSetId": "s"}, "one.json")])
    b = Config([source({"y": static("a"), "x": static(1)}, {"flagSetId": "s"}, "two.json")])
    assert a.fingerprints() == b.fingerprints()
    changed = Config([source({"x": static(2), "y": static("a")}, {"flagSetId": "s"})])
    assert changed.view("s").fingerprint != a.view("s").fingerprint
    # a set's fingerprint ignores flags of other sets
    other = Config(
        [
            source({"x": static(1), "y": static("a")}, {"flagSetId": "s"}),
            source({"z": static(0)}, {"flagSetId": "t"}, "t.json"),
        ]
    )
    assert other.view("s").fingerprint == a.view("s").fingerprint
    assert other.view(None).fingerprint != a.view(None).fingerprint
    # unknown sets: empty, and each its own
    assert a.view("u").entries == () and a.view("u").fingerprint != a.view("v").fingerprint


def test_evaluator_references_enter_the_fingerprint() -> None:
    def with_rule(domain: str) -> Config:
        flag = {
            **static(True, "on"),
            "variants": {"on": True, "off": False},
            "targeting": {"if": [{"$ref": "rule"}, "on", "off"]},
        }
        doc = {"flags": {"f": flag}, "$evaluators": {"rule": {"ends_with": [{"var": "e"}, domain]}}}
        return Config([parse(Path("f"), json.dumps(doc).encode(), 0)])

    assert with_rule("@a.com").view(None).fingerprint != with_rule("@b.com").view(None).fingerprint


def test_rules_reading_the_clock_make_a_volatile_set() -> None:
    clock = {
        **static(True, "on"),
        "variants": {"on": True, "off": False},
        "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 0]}, "on", "off"]},
    }
    assert Config([source({"t": clock})]).view(None).volatile
    assert not Config([source({"x": static(1)})]).view(None).volatile


@pytest.mark.parametrize(
    "doc",
    [
        b"{",
        b"[]",
        b'{"flags": []}',
        b'{"flags": {"x": {"state": "ON", "variants": {"a": 1}}}}',
        b'{"flags": {"x": {"state": "ENABLED", "variants": {"a": 1}, "extra": 1}}}',
    ],
)
def test_a_bad_file_is_refused_whole(doc: bytes) -> None:
    with pytest.raises(FlagFileError, match=r"f\.json"):
        parse(Path("f.json"), doc, 0)


def test_a_flag_is_resolved_by_the_type_its_values_share() -> None:
    assert kind_of({"a": True, "b": False}, "a") == "boolean"
    assert kind_of({"a": 1, "b": 2}, "a") == "integer"
    assert kind_of({"a": 1, "b": 2.5}, "a") == "float"
    assert kind_of({"a": {}, "b": [1]}, "a") == "object"
    assert kind_of({"a": "x", "b": 1}, "b") == "integer"  # mixed: the default's


def cached(body_bytes: int, flags: int = 1) -> Cached:
    results = tuple((f"f{i}", None) for i in range(flags))
    return Cached(b"x" * body_bytes, '"e"', results, EvaluationContext())  # type: ignore[arg-type]


def test_body_cache_is_bounded_by_entries_and_bytes_least_recent_first() -> None:
    cache = BodyCache(capacity=3, max_bytes=10_000)
    for i in range(3):
        cache.put((None, "fp", b"%d" % i), cached(100))
    assert cache.get((None, "fp", b"0")) is not None  # 0 is now the most recent
    cache.put((None, "fp", b"3"), cached(100))
    assert cache.get((None, "fp", b"1")) is None and len(cache) == 3
    # each entry is charged 400 + 900 (body) + 2 x 1 (context) + 200 (one flag) = 1502
    big = BodyCache(capacity=100, max_bytes=3_100)
    for i in range(10):
        big.put(("s", "fp", b"%d" % i), cached(900))
    assert (big.bytes, len(big)) == (3_004, 2)
    big.put(("s", "fp", b"huge"), cached(5_000))
    assert big.get(("s", "fp", b"huge")) is None and big.counts["too_large"] == 1
    big.drop_sets({"s"})
    assert len(big) == 0 and big.bytes == 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("*", True),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, expected: bool) -> None:
    assert matches(header, '"abc"') is expected


def test_stream_tokens_differ_by_channel_and_keys_and_agree_across_instances() -> None:
    one, same = Auth(["k1", "k2"]), Auth(["k2", "k1"])
    assert one.token("a") == same.token("a") != one.token("b") != one.token(None)
    assert Auth(["k1"]).token("a") != one.token("a")
    assert Auth([]).token("a") == "" and not Auth([]).enabled


async def test_mounted_under_a_prefix_the_streams_follow_it(tmp_path: Path) -> None:
    flags = tmp_path / "f.json"
    flags.write_text(json.dumps({"flags": {"x": static(1)}}))
    telemetry = flageval.Telemetry(enabled=False)
    host = web.Application()
    host.add_subapp("/flags", create_app(flags=[flags], telemetry=telemetry, poll_interval_s=0.05))
    runner = web.AppRunner(host)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/flags"
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/ofrep/v1/evaluate/flags", json={"context": {}}) as resp:
            body = await resp.json()
        uri = body["eventStreams"][0]["endpoint"]["requestUri"]
        assert uri == "/flags/ofrep/v1/sse"
        stream = await session.get(f"http://127.0.0.1:{port}{uri}")
        assert stream.status == 200 and stream.content_type == "text/event-stream"
        assert await stream.content.readline() == b": connected\n"
        # stopping the host ends the stream: the read sees the end, not a hang
        cleanup = asyncio.ensure_future(runner.cleanup())
        rest = await asyncio.wait_for(stream.content.read(), 10)
        assert rest == b"\n"
        await asyncio.wait_for(cleanup, 10)
        stream.release()


async def test_a_bug_in_a_handler_is_a_500_and_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    flags = tmp_path / "f.json"
    flags.write_text(json.dumps({"flags": {"x": static(1)}}))

    def broken(*args: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(handlers, "evaluate_all", broken)  # a fault no input can cause
    runner = web.AppRunner(create_app(flags=[flags], telemetry=flageval.Telemetry(enabled=False)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/ofrep/v1/evaluate/flags"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.post(url, json={"context": {}}) as resp:
                    assert resp.status == 500
                    assert await resp.json() == {"errorDetails": "internal server error"}
    finally:
        await runner.cleanup()
    said = [r for r in caplog.records if "internal error serving" in r.getMessage()]
    assert len(said) == 1 and "ZeroDivisionError" in said[0].getMessage()


def test_keys_come_from_the_variable_unless_given() -> None:
    env = {ENV_API_KEYS: " k1 ,, k2 "}
    assert ServerOptions.load(env, flags=["f.json"]).api_keys == ("k1", "k2")
    assert ServerOptions.load(env, flags=["f.json"], api_keys=["mine"]).api_keys == ("mine",)
    assert ServerOptions.load({}, flags=["f.json"]).api_keys == ()
    with pytest.raises(ValueError, match="flags"):
        ServerOptions.load(env)


def test_the_command_refuses_a_bad_option_by_name(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flageval.ofrep.server",
            "--flags",
            str(tmp_path / "f.json"),
            "--keepalive-s",
            "500",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, ENV_API_KEYS: "never-shown"},
    )
    assert done.returncode == 2
    assert "keepalive_s" in done.stderr and "inactivity_delay_s" in done.stderr
    assert "never-shown" not in done.stderr + done.stdout


def test_a_flag_file_past_the_size_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flageval.ofrep.server import _watch

    path = tmp_path / "f.json"
    path.write_text(json.dumps({"flags": {"x": static(1)}}))
    monkeypatch.setattr(_watch, "MAX_FILE_BYTES", 10)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("read"))
    files = _watch.FlagFiles([path], 1.0, lambda config, changed: None)
    assert files.config.view(None).entries == () and files.failures == 1
