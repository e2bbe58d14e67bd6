"""An application on OpenTelemetry only, for test_otlp_wire.py: its global MeterProvider
exports through OTLP over HTTP to ``sys.argv[1]``; flageval's pipeline has no Datadog
export and an agent address (``sys.argv[2]``) it must never contact. Evaluates from four
threads, shuts flageval down, then the MeterProvider (its last export), and prints the
pipeline's stats as JSON."""

from __future__ import annotations

import dataclasses
import json
import sys
import threading

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

import flageval

THREADS, PER_THREAD = 4, 250


def main() -> None:
    exporter = OTLPMetricExporter(endpoint=sys.argv[1], timeout=10)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader])
    metrics.set_meter_provider(provider)
    tel = flageval.Telemetry(otel_metrics=True, datadog=False, agent_url=sys.argv[2])
    flags = {
        "checkout": InMemoryFlag(
            "new", {"new": True, "old": False}, flag_metadata={"allocation_key": "rollout-1"}
        )
    }
    api.set_provider_and_wait(flageval.instrument(InMemoryProvider(flags), tel))
    client = api.get_client()

    def evaluate() -> None:
        for i in range(PER_THREAD):
            client.get_boolean_value("checkout", False, EvaluationContext(f"user-{i}"))
            if i % 5 == 0:
                client.get_boolean_value("absent", False)

    threads = [threading.Thread(target=evaluate) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tel.shutdown(10.0)  # the last drain into the counter, before the provider's export
    provider.shutdown()
    print(json.dumps(dataclasses.asdict(tel.stats())))


if __name__ == "__main__":
    main()
