"""An event stream ``url`` is requested byte for byte as the server gave it."""

from __future__ import annotations

import socket
from collections.abc import Callable

from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider

from .helpers import start_with_stream
from .ofrep_server import OFREPTestServer, wait_until

RAW = "/sse/a%2Fb%7Ec%41?token=x%2Fy%7E&z=%41"


def test_the_recorded_target_is_the_raw_one(server: OFREPTestServer) -> None:
    # The check below is only as good as the recording: a raw request proves it is raw.
    with socket.create_connection(("127.0.0.1", server._server.port), timeout=5) as sock:
        sock.sendall(f"GET {RAW} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        sock.recv(1024)
    wait_until(lambda: len(server.sse_requests()) == 1, what="recorded")
    assert server.sse_requests()[0].target == RAW


def test_stream_url_is_sent_byte_for_byte(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True)
    start_with_stream(server, make_provider, [{"type": "sse", "url": server.url + RAW}])
    assert [r.target for r in server.sse_requests()] == [RAW]


def test_endpoint_request_uri_is_sent_byte_for_byte(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True)
    streams = [{"type": "sse", "endpoint": {"requestUri": RAW}}]
    start_with_stream(server, make_provider, streams)
    assert [r.target for r in server.sse_requests()] == [RAW]


def test_a_stream_url_that_is_not_a_uri_is_an_invalid_entry(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("f", True)
    server.event_streams = [
        {"type": "sse", "url": server.url + "/sse/with space"},
        {"type": "sse", "url": server.url + "/sse/caf\u00e9"},
    ]
    provider = make_provider(server.url)
    provider.initialize(EvaluationContext())
    assert provider.stats()["stream_entries_invalid"] == 2
    assert server.sse_requests() == []
