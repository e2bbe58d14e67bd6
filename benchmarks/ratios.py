"""Run the whole benchmark suite and print the ratio table (issue 3's targets).

From the repository root::

    python -m benchmarks.ratios                 # run everything, print the table
    python -m benchmarks.ratios -k hotpath      # extra arguments go to pytest
    python -m benchmarks.ratios --from-json F   # print the table of an earlier run

The pytest-benchmark JSON of the run is kept (path printed at the end). Nothing here
asserts a timing: a target row says ``met`` or ``NOT met``, and the process exits 0
either way (1 only if a benchmark itself failed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(pytest_args: list[str], json_path: Path) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "benchmarks",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--benchmark-json={json_path}",
        *pytest_args,
    ]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def _by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in data["benchmarks"]}


def _fmt_ns(ns: float) -> str:
    return f"{ns / 1000:.2f} us" if ns >= 1000 else f"{ns:.0f} ns"


def _verdict(value: float, limit: float) -> str:
    return "met" if value <= limit else "NOT met"


def table(data: dict[str, Any]) -> list[str]:
    b = _by_name(data)
    out: list[str] = []
    row = out.append
    row("| benchmark | figure | value | target | verdict |")
    row("|---|---|---|---|---|")

    for kind in ("sync", "async"):
        for n in (10, 0, 50):
            e = b.get(f"test_{kind}_paired[{n}]", {}).get("extra_info")
            if not e:
                continue
            tag = f"{kind}, {n} attrs ({e['rounds']} rounds)"
            w, c = e["ratio_to_empty_hook_wall"], e["ratio_to_empty_hook_cpu"]
            med = e["median_wall_ns"]
            target = n == 10
            row(
                f"| {tag} | medians (wall): {' / '.join(k.replace('_', ' ') for k in med)} | "
                f"{' / '.join(_fmt_ns(med[k]) for k in med)} | | |"
            )
            row(
                f"| {tag} | flageval / empty hook, wall | {w['flageval']:.3f} | "
                f"{'<= 1.05' if target else ''} | "
                f"{_verdict(w['flageval'], 1.05) if target else ''} |"
            )
            row(
                f"| {tag} | flageval / empty hook, CPU incl. background | {c['flageval']:.3f} | "
                f"{'<= 1.05' if target else ''} | "
                f"{_verdict(c['flageval'], 1.05) if target else ''} |"
            )
            if "wrapper" in w:
                nw, nc = e["ratio_to_no_hook_wall"], e["ratio_to_no_hook_cpu"]
                for figure, value, limit in (
                    ("wrapper / empty hook, wall", w["wrapper"], 0.85),
                    ("wrapper / empty hook, CPU incl. background", c["wrapper"], 0.85),
                    ("wrapper / no hook, wall", nw["wrapper"], 1.20),
                    ("wrapper / no hook, CPU incl. background", nc["wrapper"], 1.20),
                ):
                    row(
                        f"| {tag} | {figure} | {value:.3f} | {f'<= {limit}' if target else ''} | "
                        f"{_verdict(value, limit) if target else ''} |"
                    )
                row(
                    f"| {tag} | flageval hook / no hook (wall, CPU) | "
                    f"{nw['flageval']:.3f}, {nc['flageval']:.3f} | | |"
                )
            for clock, key in (("wall", "wall"), ("CPU", "cpu")):
                added = e[f"added_cost_flageval_over_ddtrace_{key}"]
                row(
                    f"| {tag} | flageval added cost / ddtrace added cost, {clock} | "
                    f"{added:.3f} | <= 0.5 | {_verdict(added, 0.5)} |"
                )
            row(
                f"| {tag} | ddtrace / empty hook (wall, CPU) | "
                f"{w['ddtrace']:.3f}, {c['ddtrace']:.3f} | | |"
            )
            row(
                f"| {tag} | otel span / empty hook (wall, CPU) | "
                f"{w['otel_span']:.3f}, {c['otel_span']:.3f} | | |"
            )
            row(f"| {tag} | no hook / empty hook (wall) | {w['no_hook']:.3f} | | |")

    e = b.get("test_four_threads_throughput", {}).get("extra_info")
    if e:
        rates = e["evals_per_s_median"]
        row(
            f"| 4 threads x {e['evaluations_per_round'] // e['threads']:,} | evaluations/s "
            f"empty hook / flageval | {rates['empty_hook']:,} / {rates['flageval']:,} | | |"
        )
        row(
            f"| 4 threads | flageval throughput / empty hook | "
            f"{e['throughput_flageval_over_empty_hook']:.3f} | | |"
        )
        row(
            f"| 4 threads | queue_overflow (deepest queue / capacity) | {e['queue_overflow']} "
            f"({e['deepest_queue']:,} / {e['queue_capacity']:,}) | 0 | "
            f"{'met' if e['queue_overflow'] == 0 else 'NOT met'} |"
        )

    for threads in (1, 4, 8):
        e = b.get(f"test_threads_for_ten_seconds[{threads}]", {}).get("extra_info")
        if not e:
            continue
        for name, v in e["variants"].items():
            row(
                f"| {threads} thread(s) x {e['seconds']:g} s, {name} | evaluations/s; "
                f"queue_overflow (deepest queue) | {v['evals_per_s']:,}; {v['queue_overflow']} "
                f"({v['deepest_queue']:,}) | overflow 0 | "
                f"{'met' if v['queue_overflow'] == 0 else 'NOT met'} |"
            )

    targets = {"10 attrs, 1,000 distinct": 1000.0, "10 attrs, identical": 500.0}
    for name, bench in b.items():
        if not name.startswith(("test_worker_cpu_per_evaluation", "test_ddtrace_aggregate")):
            continue
        e = bench["extra_info"]
        ns = e["cpu_ns_per_evaluation_median"]
        low = e.get("cpu_ns_per_evaluation_min", ns)
        limit = targets.get(e["scenario"])
        row(
            f"| worker CPU/eval (median; min) | {e['scenario']} | {_fmt_ns(ns)}; {_fmt_ns(low)} | "
            f"{'<= ' + _fmt_ns(limit) if limit else ''} | "
            f"{_verdict(ns, limit) if limit else ''} |"
        )

    e = b.get("test_worker_cpu_by_width", {}).get("extra_info")
    if e:
        med, to10, to_sdk = (
            e["cpu_ns_per_evaluation_median"],
            e["ratio_to_10_attrs"],
            e["ratio_to_sdk"],
        )
        for name, ns in med.items():
            if name.startswith("sdk"):
                continue
            row(f"| worker CPU/eval by width (1,000 distinct x 3) | {name} | {_fmt_ns(ns)} | | |")
        row(
            f"| worker by width | 64 attrs / 10 attrs | {to10['64 attrs']:.3f} | <= 2 | "
            f"{_verdict(to10['64 attrs'], 2.0)} |"
        )
        row(
            f"| worker by width | worker / SDK evaluation with no hook, 256 attrs "
            f"({_fmt_ns(med['sdk, 256 attrs'])}) | {to_sdk['256 attrs']:.3f} | <= 0.5 | "
            f"{_verdict(to_sdk['256 attrs'], 0.5)} |"
        )

    e = b.get("test_worker_in_place_against_alone", {}).get("extra_info")
    if e:
        med = e["cpu_ns_per_evaluation_median"]
        added = e["added_by_flageval_ns_median"]
        row(
            f"| worker in place (10 attrs, 1,000 distinct) | worker alone; flageval's added "
            f"CPU in place (hook - empty hook, all threads); the hand-off's overhead (their "
            f"difference, per round) | {_fmt_ns(med['alone'])}; {_fmt_ns(added)}; "
            f"{_fmt_ns(e['handoff_overhead_ns_median'])} | | |"
        )

    bench = b.get("test_flush_full_tier")
    if bench:
        e, st = bench["extra_info"], bench["stats"]
        row(
            f"| flush | take + pack {e['rows']:,} rows -> {e['bodies']} bodies "
            f"(median of {st['rounds']}; min) | {st['median']:.3f} s; {st['min']:.3f} s | "
            f"<= 0.3 s | {_verdict(st['median'], 0.3)} |"
        )

    e = b.get("test_otel_paired", {}).get("extra_info")
    if e:
        w, c, med = e["ratio_to_empty_hook_wall"], e["ratio_to_empty_hook_cpu"], e["median_wall_ns"]
        tag = f"OpenTelemetry export, sync, 10 attrs ({e['rounds']} rounds)"
        row(
            f"| {tag} | medians (wall): {' / '.join(k.replace('_', ' ') for k in med)} | "
            f"{' / '.join(_fmt_ns(med[k]) for k in med)} | | |"
        )
        for name in ("otel_only", "otel_and_datadog"):
            for clock, r in (("wall", w), ("CPU incl. background", c)):
                row(
                    f"| {tag} | instrument, {name.replace('_', ' ')} / empty hook, {clock} | "
                    f"{r[name]:.3f} | <= 0.9 | {_verdict(r[name], 0.9)} |"
                )
        for name in ("datadog", "tracing_hook", "no_hook"):
            row(
                f"| {tag} | {name.replace('_', ' ')} / empty hook (wall, CPU) | "
                f"{w[name]:.3f}, {c[name]:.3f} | | |"
            )
    e = b.get("test_otel_exact_from_threads", {}).get("extra_info")
    if e:
        row(
            f"| OpenTelemetry export, {e['threads']} threads x {e['seconds']:g} s | counter sums "
            f"= evaluations per flag, variant, reason, error ({e['evaluations']:,} evaluations, "
            f"{e['evaluations_per_s']:,}/s, {e['attribute_sets']} sets) | {e['sums_equal']} | "
            f"True | {'met' if e['sums_equal'] else 'NOT met'} |"
        )

    for name, bench in b.items():
        if not name.startswith("test_memory_growth_against_budget"):
            continue
        e = bench["extra_info"]
        g = e["peak_growth_over_budget"]
        row(
            f"| memory | {e['scenario']}: peak RSS growth / budget "
            f"({e['rss_peak_growth_bytes'] / 2**20:.1f} MiB / {e['budget_bytes'] / 2**20:.0f} MiB; "
            f"{e['full_buckets']:,} full buckets) | {g:.3f} | <= 1.2 | {_verdict(g, 1.2)} |"
        )
    return out


def single_variant_table(data: dict[str, Any]) -> list[str]:
    """pytest-benchmark's own figures per variant (separate runs: only indicative)."""
    variants = ("no_hook", "empty_hook", "flageval", "wrapper", "otel_span", "ddtrace")
    cells: dict[tuple[str, int], dict[str, str]] = {}
    for bench in data["benchmarks"]:
        name = bench["name"]
        if not name.startswith(("test_sync_eval[", "test_async_eval[")):
            continue
        kind = "async" if name.startswith("test_async") else "sync"
        variant, attrs = name.split("[", 1)[1].rstrip("]").rsplit("-", 1)
        per = bench["extra_info"].get("evaluations_per_call", 1)
        st = bench["stats"]
        cells.setdefault((kind, int(attrs)), {})[variant] = (
            f"{st['median'] / per * 1e6:.1f} ({st['min'] / per * 1e6:.1f})"
        )
    if not cells:
        return []
    out = [
        "",
        "single-variant runs, us per evaluation, median (min):",
        "| kind | attrs | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for (kind, attrs), v in sorted(cells.items()):
        out.append(f"| {kind} | {attrs} | " + " | ".join(v.get(k, "") for k in variants) + " |")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--from-json", type=Path, help="print the table of an earlier run")
    p.add_argument(
        "--json",
        type=Path,
        default=Path(f"/tmp/flageval_bench_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}.json"),
        help="where to keep this run's pytest-benchmark JSON",
    )
    args, pytest_args = p.parse_known_args()
    rc = 0
    path = args.from_json
    if path is None:
        path = args.json
        rc = _run(pytest_args, path)
        if not path.exists():
            print("no benchmark JSON written", file=sys.stderr)
            return rc or 1
    data = json.loads(path.read_text())
    m = data.get("machine_info", {})
    print()
    print(
        f"machine: {m.get('cpu', {}).get('brand_raw', '?')}, {m.get('cpu', {}).get('count', '?')} "
        f"CPUs; Python {m.get('python_version', '?')}; {data.get('datetime', '')}"
    )
    print("\n".join(table(data) + single_variant_table(data)))
    print(f"\nbenchmark JSON: {path}")
    return 1 if rc not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
