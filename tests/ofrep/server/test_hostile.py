"""Hostile bodies and contexts: each refused with its status and errorCode, the server
unharmed (it answers the next request, its memory bounded by the limits)."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest

from .conftest import static, write_flags
from .process import ServerProcess, request, values

BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    flags = write_flags(tmp_path_factory.mktemp("hostile") / "f.json", {"x": static(1)})
    srv = ServerProcess(
        [flags],
        "--max-body-bytes",
        "4096",
        "--max-context-depth",
        "4",
        "--max-context-values",
        "50",
        "--body-timeout-s",
        "0.5",
    )
    yield srv
    assert srv.stop() == 0
    # aiohttp's traceback for a malformed request, once a minute however many come
    assert sum("Traceback" in line for line in srv.lines) <= 1, srv.log()


def post(server: ServerProcess, body: bytes, path: str = BULK) -> tuple[int, object]:
    status, _, answer = request(server.url, "POST", path, body)
    return status, answer


def still_serving(server: ServerProcess) -> None:
    assert values(server.bulk({"targetingKey": "u"})[2]) == {"x": 1}


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "PARSE_ERROR"),
        (b"{not json", "PARSE_ERROR"),
        (b'{"context": {"a": NaN}}', "PARSE_ERROR"),
        (b'{"context": {"a": "\xff\xfe"}}', "PARSE_ERROR"),
        (b"[1, 2, 3]", "PARSE_ERROR"),
        (b'"context"', "PARSE_ERROR"),
        (b"{}", "INVALID_CONTEXT"),
        (b'{"context": null}', "INVALID_CONTEXT"),
        (b'{"context": "user-1"}', "INVALID_CONTEXT"),
        (b'{"context": [1]}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": 42}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": {"id": "u"}}}', "INVALID_CONTEXT"),
        (json.dumps({"context": nested(5)}).encode(), "INVALID_CONTEXT"),
        (b'{"context": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", None),  # past 4096 B
        (b'{"context": {"a": ' + b"[" * 1500 + b"]" * 1500 + b"}}", "INVALID_CONTEXT"),
        (json.dumps({"context": {f"k{i}": i for i in range(51)}}).encode(), "INVALID_CONTEXT"),
        (json.dumps({"context": {"list": list(range(60))}}).encode(), "INVALID_CONTEXT"),
    ],
)
def test_bad_bodies_are_400_with_an_error_code(
    server: ServerProcess, body: bytes, code: str | None
) -> None:
    for path in (BULK, BULK + "/x"):
        status, answer = post(server, body, path)
        if code is None:
            assert status == 413
        else:
            assert status == 400, answer
            assert isinstance(answer, dict) and answer["errorCode"] == code
            assert answer["errorDetails"]
    still_serving(server)


def test_within_the_limits_a_nested_context_is_served(server: ServerProcess) -> None:
    status, answer = post(server, json.dumps({"context": nested(4)}).encode())
    assert status == 200 and values(answer) == {"x": 1}


def test_an_oversized_body_is_refused_unread_with_or_without_a_length(
    server: ServerProcess,
) -> None:
    big = b'{"context": {"a": "' + b"x" * 1_000_000 + b'"}}'
    assert post(server, big)[0] == 413
    # chunked: no Content-Length to refuse by, the read stops at the limit
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", BULK)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 8192
    try:
        conn.send(b'%x\r\n{"context": {"a": "\r\n' % len(b'{"context": {"a": "'))
        for _ in range(4):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close before everything is sent
    assert conn.getresponse().status == 413
    conn.close()
    still_serving(server)


def test_a_body_arriving_in_pieces_is_read_whole(server: ServerProcess) -> None:
    body = json.dumps({"context": {"targetingKey": "u", "pad": "p" * 3000}}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", BULK)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    for i in range(0, len(body), 500):
        conn.send(body[i : i + 500])
        time.sleep(0.01)  # separate segments: the server's first read is a part
    response = conn.getresponse()
    assert response.status == 200 and values(json.loads(response.read())) == {"x": 1}
    conn.close()


def test_a_body_that_never_all_comes_is_refused_in_time(server: ServerProcess) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", BULK)
    conn.putheader("Content-Length", "100")
    conn.endheaders()
    conn.send(b'{"context": {')  # and nothing more
    response = conn.getresponse()  # the server answers without the rest
    assert response.status == 408
    assert json.loads(response.read())["errorCode"] == "PARSE_ERROR"
    conn.close()
    still_serving(server)


def test_junk_headers_keys_and_channels(server: ServerProcess) -> None:
    sel = request(server.url, "POST", BULK, b'{"context": {}}', {"Flagd-Selector": "flagSetId="})
    assert sel[0] == 400 and sel[2]["errorCode"] == "INVALID_CONTEXT"
    long_set = request(
        server.url, "POST", BULK, b'{"context": {}}', {"Flagd-Selector": "flagSetId=" + "s" * 300}
    )
    assert long_set[0] == 400
    odd_etag = request(server.url, "POST", BULK, b'{"context": {}}', {"If-None-Match": '",,W/ *x'})
    assert odd_etag[0] == 200
    for _ in range(5):  # not HTTP: aiohttp answers 400 itself, and logs it once a minute
        bad = request(server.url, "POST", BULK, b'{"context": {}}', {"If-None-Match": '"\x01'})
        assert bad[0] == 400
    assert sum("Error handling request" in line for line in server.lines) == 1
    assert post(server, b'{"context": {}}', BULK + "/" + "k" * 5000)[0] == 404
    assert post(server, b'{"context": {}}', BULK + "/%C3%A9t%C3%A9")[0] == 404
    assert request(server.url, "GET", "/ofrep/v1/sse?channels=" + "c" * 300)[0] == 400
    assert request(server.url, "GET", BULK)[0] == 405
    still_serving(server)
