"""The wire: an application on OpenTelemetry only, in its own process, exports through
the OTLP HTTP exporter to a receiver on 127.0.0.1 that decodes the protobuf
(opentelemetry-proto), and never contacts the agent it was given."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import sys
from pathlib import Path

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

ROOT = Path(__file__).resolve().parents[3]
APP = Path(__file__).with_name("otlp_app.py")


async def test_the_counter_reaches_an_otlp_receiver_in_protobuf_and_no_agent_is_asked() -> None:
    received: list[ExportMetricsServiceRequest] = []
    content_types: list[str] = []

    async def metrics(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        content_types.append(request.headers.get("Content-Type", ""))
        received.append(ExportMetricsServiceRequest.FromString(body))
        answer = ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    agent = socket.create_server(("127.0.0.1", 0))
    agent.setblocking(False)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(APP),
            f"http://127.0.0.1:{port}/v1/metrics",
            f"http://127.0.0.1:{agent.getsockname()[1]}",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30.0)
        assert proc.returncode == 0, err.decode()
        try:
            agent.accept()
            contacted = True
        except BlockingIOError:
            contacted = False
        assert not contacted
    finally:
        agent.close()
        await runner.cleanup()

    stats = json.loads(out)
    assert stats["exports"] == ["opentelemetry"] and stats["post_attempts"] == 0
    assert stats["evaluations"] == stats["otel_recorded"] == 1200  # 4 x (250 + 50)
    assert content_types and set(content_types) == {"application/x-protobuf"}
    # The provider's shutdown exported the cumulative sums last: read that request.
    (scope,) = [
        sm
        for rm in received[-1].resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == "flageval"
    ]
    (metric,) = scope.metrics
    assert (metric.name, metric.unit, metric.description) == (
        "feature_flag.evaluations",
        "{evaluation}",
        "Number of feature flag evaluations",
    )
    assert metric.WhichOneof("data") == "sum"
    assert metric.sum.is_monotonic
    assert (
        metric.sum.aggregation_temporality
        == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    points = {
        tuple(sorted((kv.key, kv.value.string_value) for kv in p.attributes)): p.as_int
        for p in metric.sum.data_points
    }
    provider = ("feature_flag.provider.name", "In-Memory Provider")
    assert points == {
        (
            ("feature_flag.key", "checkout"),
            provider,
            ("feature_flag.result.allocation_key", "rollout-1"),
            ("feature_flag.result.reason", "static"),
            ("feature_flag.result.variant", "new"),
        ): 1000,
        (
            ("error.type", "flag_not_found"),
            ("feature_flag.key", "absent"),
            provider,
            ("feature_flag.result.reason", "error"),
        ): 200,
    }
    for p in metric.sum.data_points:
        assert all(kv.value.WhichOneof("value") == "string_value" for kv in p.attributes)
