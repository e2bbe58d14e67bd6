"""The bulk endpoint's ETag, 304s, flagConfigEtag, selectors, cache, reloads, credentials."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .conftest import static, write_flags
from .process import ServerProcess, request, values, wait_until

Start = Callable[..., ServerProcess]


def fingerprint(server: ServerProcess, set_id: str | None = None) -> str:
    sets = {s["flagSetId"]: s["fingerprint"] for s in server.status()["flagSets"]}
    return sets[set_id]


def test_etag_covers_the_canonical_context_and_a_match_is_answered_unevaluated(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {f"f{i}": static(i) for i in range(5)})
    server = start_server([flags])
    status, headers, body = server.bulk(
        {"targetingKey": "u1", "plan": "pro", "n": {"a": 1, "b": 2}}
    )
    assert status == 200 and values(body) == {f"f{i}": i for i in range(5)}
    etag = headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')
    # the same context in another key order is the same context
    same = server.bulk({"n": {"b": 2, "a": 1}, "plan": "pro", "targetingKey": "u1"})[1]["etag"]
    assert same == etag
    # any other context is another ETag: 1 and 1.0 and "1" and true differ
    others = [{"targetingKey": "u2", "plan": "pro", "n": {"a": 1, "b": 2}}]
    others += [
        {"targetingKey": "u1", "plan": "pro", "n": {"a": v, "b": 2}} for v in (1.0, "1", True)
    ]
    tags = {server.bulk(c)[1]["etag"] for c in others}
    assert len(tags) == 4 and etag not in tags
    before = server.status()["counts"]
    status, headers, body = server.bulk(
        {"targetingKey": "u1", "plan": "pro", "n": {"a": 1, "b": 2}}, etag=etag
    )
    assert (status, body, headers["etag"]) == (304, None, etag)
    after = server.status()["counts"]
    assert after["not_modified"] == before["not_modified"] + 1
    assert after["evaluations"] == before["evaluations"]
    # a list naming it, and its weak form, match too; another tag does not
    assert (
        server.bulk(
            {"targetingKey": "u1", "plan": "pro", "n": {"a": 1, "b": 2}}, etag=f'"x", W/{etag}'
        )[0]
        == 304
    )
    assert server.bulk({"targetingKey": "u2"}, etag=etag)[0] == 200


def test_a_changed_file_changes_the_etag_and_is_served(tmp_path: Path, start_server: Start) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags])
    _, headers, _ = server.bulk({"targetingKey": "u"})
    old = fingerprint(server)
    write_flags(flags, {"color": static("blue")})
    wait_until(lambda: fingerprint(server) != old, what="the change picked up")
    status, headers2, body = server.bulk({"targetingKey": "u"}, etag=headers["etag"])
    assert status == 200 and values(body) == {"color": "blue"}
    assert headers2["etag"] != headers["etag"]


def test_flag_config_etag_unlike_the_current_one_is_never_a_304(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags])
    context = {"targetingKey": "u"}
    etag = server.bulk(context)[1]["etag"]
    current = fingerprint(server)
    assert server.bulk(context, etag=etag, query=f"?flagConfigEtag={current}")[0] == 304
    status, _, body = server.bulk(context, etag=etag, query="?flagConfigEtag=not-this-one")
    assert status == 200 and values(body) == {"color": "red"}


def test_a_newer_flag_config_etag_has_the_files_read_at_once(
    tmp_path: Path, start_server: Start
) -> None:
    """A replica that has not polled yet (every 60 s here) reads its files when a client
    brings a configuration ETag it does not know, and serves what they say now."""
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags], poll_interval_s=60.0)
    context = {"targetingKey": "u"}
    etag = server.bulk(context)[1]["etag"]
    write_flags(flags, {"color": static("blue")})
    assert server.bulk(context, etag=etag)[0] == 304  # not polled: still the old flags
    status, _, body = server.bulk(context, etag=etag, query="?flagConfigEtag=from-another-replica")
    assert status == 200 and values(body) == {"color": "blue"}


def test_selectors_pick_a_flag_set_and_later_files_win(tmp_path: Path, start_server: Start) -> None:
    a = write_flags(
        tmp_path / "a.json", {"shared": static("from-a"), "only-a": static(1)}, {"flagSetId": "a"}
    )
    b = write_flags(
        tmp_path / "b.json",
        {"shared": static("from-b"), "in-c": {**static(2), "metadata": {"flagSetId": "c"}}},
        {"flagSetId": "b"},
    )
    server = start_server([a, b])
    _, _, everything = server.bulk({})
    assert values(everything) == {"shared": "from-b", "only-a": 1, "in-c": 2}
    assert everything["eventStreams"] == [
        {"type": "sse", "endpoint": {"requestUri": "/ofrep/v1/sse"}, "inactivityDelaySec": 120}
    ]
    _, _, in_a = server.bulk({}, selector="a")
    assert values(in_a) == {"shared": "from-a", "only-a": 1}
    assert in_a["metadata"] == {"flagSetId": "a"}
    assert in_a["eventStreams"][0]["endpoint"]["requestUri"] == "/ofrep/v1/sse?channels=a"
    assert values(server.bulk({}, selector="b")[2]) == {"shared": "from-b"}
    assert values(server.bulk({}, selector="c")[2]) == {"in-c": 2}
    status, _, none = server.bulk({}, selector="nobody")
    assert status == 200 and none["flags"] == []
    # the same context under two flag sets never shares an ETag
    tags = {server.bulk({}, selector=s)[1]["etag"] for s in ("a", "b", "c", "nobody")}
    assert len(tags) == 4
    status, _, err = request(
        server.url,
        "POST",
        "/ofrep/v1/evaluate/flags",
        b'{"context": {}}',
        {"Flagd-Selector": "source=a.json"},
    )
    assert status == 400 and err["errorCode"] == "INVALID_CONTEXT"


def test_answers_are_cached_per_context_within_the_capacity(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"x": static(True)})
    server = start_server([flags], "--cache-capacity", "2")
    for user in ("a", "b", "c", "d", "e"):
        server.bulk({"targetingKey": user})
    server.bulk({"targetingKey": "e"})
    cache = server.status()["cache"]
    assert (cache["entries"], cache["misses"], cache["hits"], cache["evicted"]) == (2, 5, 1, 3)
    # a cached answer is still counted as served evaluations
    assert server.status()["counts"]["evaluations"] == 6


def test_a_file_that_does_not_parse_keeps_its_flags_and_is_said_once(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    server = start_server([flags])
    bad = '{"flags": {"color": {"state": "MAYBE", "variants": {"v": 1}}}}'
    flags.write_text(bad)
    wait_until(lambda: server.status()["files"]["failures"] >= 1, what="the bad file read")
    # a second distinct stat of the same bad content, then polls that see it unchanged
    os.utime(flags)
    wait_until(lambda: server.status()["files"]["failures"] >= 2, what="the bad file re-read")
    assert values(server.bulk({})[2]) == {"color": "red"}

    def said() -> list[str]:
        return [line for line in server.lines if "rejected by flagd's parser" in line]

    assert len(said()) == 1 and "keeping its previous flags" in said()[0]
    # back to exactly what it gave before: nothing new to load, but recovered
    write_flags(flags, {"color": static("red")})
    wait_until(lambda: any("flags loaded again" in x for x in server.lines), what="recovery")
    flags.write_text(bad)
    wait_until(lambda: len(said()) == 2, what="the same failure said again after a recovery")
    write_flags(flags, {"color": static("green")})
    wait_until(lambda: values(server.bulk({})[2]) == {"color": "green"}, what="the fix served")
    assert server.status()["files"]["reloads"] == 1  # only green changed anything


def test_a_missing_file_at_start_serves_nothing_from_it_until_it_appears(
    tmp_path: Path, start_server: Start
) -> None:
    later = tmp_path / "later.json"
    present = write_flags(tmp_path / "now.json", {"now": static(1)})
    server = start_server([present, later])
    assert values(server.bulk({})[2]) == {"now": 1}
    assert sum("later.json: cannot read" in line for line in server.lines) == 1
    write_flags(later, {"later": static(2)})
    wait_until(lambda: values(server.bulk({})[2]) == {"now": 1, "later": 2}, what="the new file")


def test_credentials_bearer_or_api_key(tmp_path: Path, start_server: Start) -> None:
    flags = write_flags(tmp_path / "f.json", {"x": static(1)}, {"flagSetId": "s"})
    server = start_server([flags], env={"FLAGEVAL_OFREP_SERVER_API_KEYS": "key-one, key-two"})
    status, headers, body = server.bulk({})
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert server.bulk({}, headers={"Authorization": "Bearer key-three"})[0] == 403
    assert server.bulk({}, headers={"X-API-Key": "key-on"})[0] == 403
    assert server.bulk({}, headers={"Authorization": "Basic a2V5LW9uZQ=="})[0] == 403
    ok, _, body = server.bulk({}, selector="s", headers={"Authorization": "Bearer key-one"})
    assert ok == 200 and values(body) == {"x": 1}
    assert server.bulk({}, headers={"X-API-Key": "key-two"})[0] == 200
    single = request(server.url, "POST", "/ofrep/v1/evaluate/flags/x", b'{"context": {}}')
    assert single[0] == 401
    assert request(server.url, "GET", "/ofrep/server/status")[0] == 401
    counts = request(server.url, "GET", "/ofrep/server/status", headers={"X-API-Key": "key-one"})[2]
    assert (counts["counts"]["unauthorized"], counts["counts"]["forbidden"]) == (3, 3)
    assert not any("key-one" in line or "key-two" in line for line in server.lines)
