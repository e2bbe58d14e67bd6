"""ADR-0008 event streams: a refetch event per change to every client of the flag set."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .conftest import static, write_flags
from .process import ServerProcess, Stream, wait_until

Start = Callable[..., ServerProcess]


def fingerprints(server: ServerProcess) -> dict[str | None, str]:
    return {s["flagSetId"]: s["fingerprint"] for s in server.status()["flagSets"]}


def connected(server: ServerProcess, n: int) -> None:
    wait_until(lambda: server.status()["streams"]["open"] == n, what=f"{n} streams open")


def test_a_change_reaches_every_stream_of_its_flag_set_with_increasing_ids(
    tmp_path: Path, start_server: Start
) -> None:
    a = write_flags(tmp_path / "a.json", {"x": static(1)}, {"flagSetId": "a"})
    b = write_flags(tmp_path / "b.json", {"y": static(1)}, {"flagSetId": "b"})
    server = start_server([a, b])
    on_a = [Stream(server.url, "/ofrep/v1/sse?channels=a") for _ in range(3)]
    on_b = Stream(server.url, "/ofrep/v1/sse?channels=b")
    on_all = Stream(server.url, "/ofrep/v1/sse")
    connected(server, 5)
    write_flags(a, {"x": static(2)}, {"flagSetId": "a"})
    wait_until(lambda: all(s.events for s in [*on_a, on_all]), what="events on a's streams")
    now = fingerprints(server)
    mtime = int(os.stat(a).st_mtime)
    for stream in on_a:
        (event,) = stream.events
        assert event["event"] == "message"
        assert event["data"] == {
            "type": "refetchEvaluation",
            "etag": now["a"],
            "lastModified": mtime,
        }
    assert on_all.events[0]["data"]["etag"] == now[None]
    assert on_b.events == []  # b did not change
    first_id = int(on_a[0].events[0]["id"])
    write_flags(b, {"y": static(2)}, {"flagSetId": "b"})
    wait_until(lambda: on_b.events and len(on_all.events) == 2, what="b's event")
    assert on_b.events[0]["data"]["etag"] == fingerprints(server)["b"]
    assert int(on_all.events[1]["id"]) > int(on_all.events[0]["id"])
    write_flags(a, {"x": static(3)}, {"flagSetId": "a"})
    wait_until(lambda: all(len(s.events) == 2 for s in on_a), what="a's second event")
    assert all(int(s.events[1]["id"]) > first_id for s in on_a)
    for stream in [*on_a, on_b, on_all]:
        stream.close()


def test_a_quiet_stream_gets_keepalive_comments(tmp_path: Path, start_server: Start) -> None:
    """Comments, not events, every keepalive_s (which the settings keep shorter than the
    advertised inactivityDelaySec: test_unusable_settings_are_refused_by_name)."""
    flags = write_flags(tmp_path / "f.json", {"x": static(1)})
    server = start_server([flags], "--inactivity-delay-s", "2", "--keepalive-s", "0.2")
    assert server.bulk({})[2]["eventStreams"][0]["inactivityDelaySec"] == 2
    stream = Stream(server.url)
    wait_until(lambda: stream.lines.count(": keep-alive") >= 2, what="two keep-alives")
    assert stream.events == []
    stream.close()


def test_streams_past_the_bound_are_refused_and_slots_come_back(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"x": static(1)})
    server = start_server([flags], "--max-streams", "2", "--keepalive-s", "0.1")
    first, second = Stream(server.url), Stream(server.url)
    connected(server, 2)
    third = Stream(server.url)
    assert third.status == 503 and third.response.getheader("Retry-After") == "5"
    first.close()
    # the server learns of the closed connection at its next write (a keep-alive)
    connected(server, 1)
    fourth = Stream(server.url)
    assert fourth.status == 200
    assert server.status()["streams"]["refused"] == 1
    second.close()
    fourth.close()


def test_public_origin_is_advertised_and_tokens_open_streams_without_headers(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"x": static(1)}, {"flagSetId": "s"})
    server = start_server(
        [flags],
        "--public-origin",
        "https://flags.example.com",
        env={"FLAGEVAL_OFREP_SERVER_API_KEYS": "secret-key"},
    )
    body = server.bulk({}, selector="s", headers={"X-API-Key": "secret-key"})[2]
    (advert,) = body["eventStreams"]
    assert advert["endpoint"]["origin"] == "https://flags.example.com"
    uri = advert["endpoint"]["requestUri"]
    assert uri.startswith("/ofrep/v1/sse?channels=s&token=")
    token = uri.rsplit("=", 1)[1]
    assert Stream(server.url, uri).status == 200
    assert Stream(server.url, "/ofrep/v1/sse?channels=s").status == 401
    assert Stream(server.url, "/ofrep/v1/sse?channels=s&token=" + "0" * 32).status == 403
    # a token opens its own channel only
    assert Stream(server.url, f"/ofrep/v1/sse?channels=other&token={token}").status == 403
    assert (
        Stream(server.url, "/ofrep/v1/sse?channels=other", {"X-API-Key": "secret-key"}).status
        == 200
    )
    assert not any(token in line for line in server.lines)


def test_sigterm_ends_open_streams_and_exits_0(tmp_path: Path, start_server: Start) -> None:
    flags = write_flags(tmp_path / "f.json", {"x": static(1)})
    server = start_server([flags])
    streams = [Stream(server.url) for _ in range(3)]
    connected(server, 3)
    assert server.stop() == 0
    assert all(s.ended.wait(5) for s in streams)
