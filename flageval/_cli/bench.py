"""``python -m flageval bench``: what flageval costs an evaluation, on this machine.

Paired rounds, as the repository's benchmarks take them: four OpenFeature clients (no
hook, an empty hook, the flageval hook, the provider wrapped by ``flageval.instrument``),
each with its own provider built by the same factory, evaluate the same flag with the
same context in alternating blocks, the order rotated every round; the per-round ratio
is taken and its median over rounds reported, so that a disturbance moves one round,
not the figure. Two clocks per block: wall time around the evaluations (what the caller
waits) and process CPU time around them plus the wait until the pipeline's worker has
aggregated what they queued (what they cost in total, whichever thread paid).

Bounded by ``--seconds``. The pipeline takes its settings from the environment, except
where it posts: an intake on 127.0.0.1 inside this process, so nothing leaves the
machine. Exit status 0 whatever the figures; 1 when the run could not be made (a
provider that cannot be imported, built or started), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.hook import Hook
from openfeature.provider import FeatureProvider
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval._instrumented import check_provider, instrument
from flageval._telemetry import Telemetry

from .intake import IntakeError, LocalIntake

VARIANTS = ("no hook", "empty hook", "hook", "wrapper")
DEFAULT_FLAG = "bench-flag"
KINDS = {"boolean": False, "string": "", "integer": 0, "float": 0.0, "object": {}}
#: One variant's block takes about this long: a few of the worker's drain intervals
#: (50 ms by default), so that the background work it causes lands inside the block
#: and shows on the wall clock too, not only in the settling after it.
BLOCK_S = 0.15
MIN_ROUNDS = 3


class BenchError(Exception):
    """The run could not be made (exit status 1)."""


class EmptyHook(Hook):
    """The SDK's fixed price of any hook: a HookContext and four stage calls."""


def add_parser(sub: Any) -> None:
    """Register ``bench`` on the ``python -m flageval`` sub-command parser."""
    p = sub.add_parser("bench", help="measure what flageval costs an evaluation here")
    p.add_argument(
        "--provider",
        metavar="MODULE:FACTORY",
        help="a callable returning your provider (called once per variant); "
        "default: an InMemoryProvider with one boolean flag",
    )
    p.add_argument("--flag", default=DEFAULT_FLAG, help=f"flag key (default {DEFAULT_FLAG})")
    p.add_argument("--type", dest="kind", choices=sorted(KINDS), default="boolean")
    p.add_argument("--attributes", type=int, default=10, help="context attributes (default 10)")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget (default 20)")
    p.add_argument("--mode", choices=("sync", "async", "both"), default="both")
    p.set_defaults(run=run)


def load_factory(spec: str) -> Callable[[], FeatureProvider]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BenchError(f"--provider must be MODULE:FACTORY, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise BenchError(f"--provider: cannot import {module_name!r}: {exc}") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise BenchError(f"--provider: {module_name!r} has no {attr!r}")
    if not callable(factory):
        raise BenchError(f"--provider: {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]


def default_provider() -> InMemoryProvider:
    flag = InMemoryFlag("on", {"on": True, "off": False}, flag_metadata={"allocationKey": "all"})
    return InMemoryProvider({DEFAULT_FLAG: flag})


def context(n: int) -> EvaluationContext:
    """``n`` flat attributes of mixed scalar types, the shape of a typical web context."""
    kinds: tuple[Callable[[int], Any], ...] = (
        lambda i: f"value-{i}",
        lambda i: 1000 + i,
        lambda i: i / 8,
        lambda i: i % 2 == 0,
    )
    return EvaluationContext("bench-user", {f"attr_{i:03d}": kinds[i % 4](i) for i in range(n)})


def _settle(tel: Telemetry) -> Callable[[], None]:
    """Wait until the worker has taken and aggregated what the block queued."""
    handoff = tel.handoff
    assert handoff is not None

    def settle() -> None:
        deadline = time.monotonic() + 5.0
        while handoff.queue and time.monotonic() < deadline:
            time.sleep(0.001)
        tel.stats()  # runs on the worker's loop: after the drain in progress, if any

    return settle


def _blocks(
    clients: dict[str, OpenFeatureClient], flag: str, kind: str, ctx: EvaluationContext
) -> tuple[dict[str, Callable[[int], None]], dict[str, Callable[[int], None]]]:
    default = KINDS[kind]
    sync_blocks: dict[str, Callable[[int], None]] = {}
    async_blocks: dict[str, Callable[[int], None]] = {}
    loop = asyncio.new_event_loop()
    for name, client in clients.items():
        get = getattr(client, f"get_{kind}_value")
        get_async = getattr(client, f"get_{kind}_value_async")

        def sync_block(n: int, get: Any = get) -> None:
            for _ in range(n):
                get(flag, default, ctx)

        def async_block(n: int, get_async: Any = get_async) -> None:
            async def tasks() -> None:
                async def one(k: int) -> None:
                    for _ in range(k):
                        await get_async(flag, default, ctx)

                await asyncio.gather(*(one(n // 8 + (i < n % 8)) for i in range(8)))

            loop.run_until_complete(tasks())

        sync_blocks[name], async_blocks[name] = sync_block, async_block
    return sync_blocks, async_blocks


def paired(
    blocks: dict[str, Callable[[int], None]],
    settle: dict[str, Callable[[], None]],
    budget_s: float,
    progress: Callable[[str], None],
    label: str,
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Rounds until ``budget_s`` is spent (at least MIN_ROUNDS unless that takes three
    budgets): per variant, wall and CPU ns per evaluation, one entry per round."""
    t0 = time.perf_counter()
    blocks["no hook"](20)  # warm-up, and an estimate of one evaluation
    per_eval = max((time.perf_counter() - t0) / 20, 1e-6)
    for name, block in blocks.items():
        block(20)
        settle.get(name, lambda: None)()
    n = max(16, int(BLOCK_S / (1.3 * per_eval)))
    wall: dict[str, list[float]] = {k: [] for k in blocks}
    cpu: dict[str, list[float]] = {k: [] for k in blocks}
    start = time.perf_counter()
    names = list(blocks)
    r = 0
    while True:
        spent = time.perf_counter() - start
        if (r >= MIN_ROUNDS and spent >= budget_s) or spent >= 3 * budget_s:
            break
        k = r % len(names)
        for name in names[k:] + names[:k]:
            c0, w0 = time.process_time_ns(), time.perf_counter_ns()
            blocks[name](n)
            w1 = time.perf_counter_ns()
            settle.get(name, lambda: None)()
            c1 = time.process_time_ns()
            wall[name].append((w1 - w0) / n)
            cpu[name].append((c1 - c0) / n)
        r += 1
        left = max(0.0, budget_s - (time.perf_counter() - start))
        progress(f"{label}: round {r}, {n:,} evaluations per variant, {left:.1f} s left")
    return wall, cpu, n


def _ratio(t: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(t[num], t[den], strict=True))


def table(label: str, wall: dict[str, list[float]], cpu: dict[str, list[float]], n: int) -> str:
    rounds = len(wall["no hook"])
    head = "| us/eval {} | / no hook | / empty hook "
    lines = [
        f"{label}: {rounds} rounds x {n:,} evaluations per variant "
        "(us/eval: medians over rounds; each ratio: the median of the per-round ratios, "
        "so not the quotient of the two medians beside it; CPU includes the worker's "
        "background share)",
        "| variant    " + head.format("wall") + head.format("CPU ") + "|",
        "|" + "|".join("-" * w for w in (12, 14, 11, 14, 14, 11, 14)) + "|",
    ]
    for v in VARIANTS:
        cells = []
        for t in (wall, cpu):
            cells += [
                f"{statistics.median(t[v]) / 1000:12.2f}",
                f"{_ratio(t, v, 'no hook'):9.3f}",
                f"{_ratio(t, v, 'empty hook'):12.3f}",
            ]
        lines.append(f"| {v:<10} | " + " | ".join(cells) + " |")
    base = statistics.median(cpu["no hook"])
    added = {v: (_ratio(cpu, v, "no hook") - 1) * base / 1000 for v in VARIANTS}
    lines.append(
        f"added CPU per evaluation over no hook: empty hook {added['empty hook']:+.2f} us, "
        f"hook {added['hook']:+.2f} us, wrapper {added['wrapper']:+.2f} us"
    )
    return "\n".join(lines)


def _progress(out: TextIO) -> Callable[[str], None]:
    """One line rewritten in place on a terminal; else a line at most every second."""
    tty = out.isatty()
    last = [0.0]

    def show(message: str) -> None:
        if tty:
            out.write("\r" + message[:100].ljust(72))
        elif time.monotonic() - last[0] >= 1.0:
            last[0] = time.monotonic()
            out.write(message + "\n")
        out.flush()

    return show


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        _check(args)
        return _run(args, out, err)
    except BenchError as exc:
        err.write(f"\nflageval bench: {exc}\n")
        return 1


def _check(args: argparse.Namespace) -> None:
    if args.attributes < 0 or args.attributes > 10_000:
        raise BenchError("--attributes must be between 0 and 10000")
    if not 0 < args.seconds <= 3600:
        raise BenchError("--seconds must be > 0 and <= 3600")


def _build(factory: Callable[[], Any], tel: Telemetry | None) -> Any:
    try:
        provider = factory()
    except Exception as exc:
        raise BenchError(f"the provider factory failed: {type(exc).__name__}: {exc}") from None
    try:
        check_provider(provider)
    except TypeError as exc:
        raise BenchError(str(exc)) from None
    return provider if tel is None else instrument(provider, tel)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    factory = load_factory(args.provider) if args.provider else default_provider
    progress = _progress(err)
    intake = LocalIntake(keep=False)
    try:
        url = intake.start()
    except IntakeError as exc:
        raise BenchError(str(exc)) from None
    # One pipeline each, as an application using one way in has: a pipeline fed by both
    # has its hooks claim every evaluation (a cost neither way alone pays).
    try:
        tel, tel_w = (
            Telemetry(enabled=True, agentless=False, intake_url=url, service="flageval-bench")
            for _ in range(2)
        )
    except ValueError as exc:  # a setting from the environment
        intake.stop()
        raise BenchError(str(exc)) from None
    clients: dict[str, OpenFeatureClient] = {}
    try:
        tel.start()
        tel_w.start()
        hooks: dict[str, Hook | None] = {
            "no hook": None,
            "empty hook": EmptyHook(),
            "hook": tel.hook,
            "wrapper": None,
        }
        for i, (name, hook) in enumerate(hooks.items()):
            provider = _build(factory, tel_w if name == "wrapper" else None)
            domain = f"flageval-bench-{i}"
            progress(f"starting {name}: {type(provider).__name__}")
            try:
                api.set_provider_and_wait(provider, domain=domain)
            except Exception as exc:
                raise BenchError(f"the provider did not start: {exc}") from None
            clients[name] = api.get_client(domain)
            if hook is not None:
                clients[name].add_hooks([hook])
        ctx = context(args.attributes)
        details = getattr(clients["no hook"], f"get_{args.kind}_details")(
            args.flag, KINDS[args.kind], ctx
        )
        sync_blocks, async_blocks = _blocks(clients, args.flag, args.kind, ctx)
        settle = {"hook": _settle(tel), "wrapper": _settle(tel_w)}
        modes = ("sync", "async") if args.mode == "both" else (args.mode,)
        reports = []
        for mode in modes:
            blocks = sync_blocks if mode == "sync" else async_blocks
            label = f"{mode}, {args.attributes} attributes"
            wall, cpu, n = paired(blocks, settle, args.seconds / len(modes), progress, label)
            reports.append(table(label, wall, cpu, n))
        if err.isatty():
            err.write("\r" + " " * 72 + "\r")
        name = args.provider or "InMemoryProvider (built in)"
        out.write(f"flageval bench: provider {name}, flag {args.flag!r} ({args.kind})\n")
        if details.error_code is not None:
            out.write(
                f"note: the provider answered {details.error_code} for {args.flag!r}: these "
                "figures are for that error path (choose a flag with --flag/--type)\n"
            )
        out.write("\n\n".join(reports) + "\n")
        for name, pipeline in (("hook", tel), ("wrapper", tel_w)):
            stats = pipeline.stats()
            dropped = ", ".join(f"{k}={v}" for k, v in sorted(stats.dropped.items())) or "none"
            out.write(
                f"{name} pipeline: {stats.evaluations:,} evaluations counted, dropped: {dropped}\n"
            )
        return 0
    finally:
        _close(tel, tel_w, intake)


def _close(tel: Telemetry, tel_w: Telemetry, intake: LocalIntake) -> None:
    # Best effort, each part alone: a provider failing its shutdown is not the bench's.
    parts = (api.shutdown, lambda: tel.shutdown(5.0), lambda: tel_w.shutdown(5.0), intake.stop)
    for stop in parts:
        with contextlib.suppress(Exception):
            stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m flageval._cli.bench`` (the same as ``python -m flageval bench``)."""
    parser = argparse.ArgumentParser(prog="flageval")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
