"""The process's global MeterProvider for the OpenTelemetry tests and benchmarks.

OpenTelemetry lets a process set its global MeterProvider once, so every test of this
process reads one real SDK ``MeterProvider``: an ``InMemoryMetricReader`` (cumulative
sums, read on demand) beside a ``PeriodicExportingMetricReader`` (what an application
runs, every 10 s) whose exporter keeps what it is handed. Each test counts under flag
keys of its own (:func:`prefix`), so what other tests added never reaches its sums.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from flageval._otel import KEY, NAME

_lock = threading.Lock()
_installed: tuple[InMemoryMetricReader, Kept] | None = None
_serial = itertools.count()

Attrs = tuple[tuple[str, str], ...]  # an attribute set, sorted


class Kept(MetricExporter):
    """An exporter that keeps the number of exports it was handed (and nothing else)."""

    def __init__(self) -> None:
        super().__init__()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def install() -> tuple[InMemoryMetricReader, Kept]:
    """The global MeterProvider's in-memory reader and periodic exporter (set once)."""
    global _installed
    with _lock:
        if _installed is None:
            reader, kept = InMemoryMetricReader(), Kept()
            periodic = PeriodicExportingMetricReader(kept, export_interval_millis=10_000)
            metrics.set_meter_provider(MeterProvider(metric_readers=[reader, periodic]))
            _installed = reader, kept
        return _installed


def prefix(name: str) -> str:
    """Flag keys of one test's own: ``name`` and a serial, then ``/``."""
    return f"{name}-{next(_serial)}/"


def sums(reader: InMemoryMetricReader, key_prefix: str) -> dict[Attrs, int]:
    """The counter's cumulative value per attribute set, for flag keys under
    ``key_prefix``; also checks the instrument's unit, description and meter."""
    out: dict[Attrs, int] = {}
    data = reader.get_metrics_data()
    for rm in [] if data is None else data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name != NAME:
                    continue
                assert sm.scope.name == "flageval"
                assert (m.unit, m.description) == (
                    "{evaluation}",
                    "Number of feature flag evaluations",
                )
                assert m.data.is_monotonic  # a Counter's sum
                for point in m.data.data_points:
                    attrs = dict(point.attributes or {})
                    if str(attrs[KEY]).startswith(key_prefix):
                        out[tuple(sorted((k, str(v)) for k, v in attrs.items()))] = point.value
    return out


def total(s: dict[Attrs, int], **match: str) -> int:
    """The sum over the attribute sets that have every ``match`` (dots as ``__``)."""
    want = {k.replace("__", "."): v for k, v in match.items()}
    return sum(n for attrs, n in s.items() if want.items() <= dict(attrs).items())


def attrs(**kv: str | None) -> Attrs:
    """An attribute set from keywords (``feature_flag__key=...``; None: left out)."""
    return tuple(sorted((k.replace("__", "."), v) for k, v in kv.items() if v is not None))
