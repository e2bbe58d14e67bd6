"""``python -m flageval demo``: the whole pipeline against an embedded local intake.

Starts an intake (aiohttp on 127.0.0.1, a free port) that accepts and keeps what the
agent route would receive, evaluates a realistic mix of flags and contexts through an
OpenFeature client with the hook from several threads and from asyncio tasks, flushes,
and prints what the intake received, aggregated per flag, variant and allocation, with
the pipeline's counters. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from . import _bench
from .config import INTAKE_PATH
from .telemetry import Telemetry


class LocalIntake:
    """A minimal intake on 127.0.0.1 that stores every body it accepts."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> LocalIntake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)

        async def accept(request: web.Request) -> web.Response:
            self.bodies.append(await request.read())
            return web.json_response({})

        app.router.add_post(INTAKE_PATH, accept)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


def _percentage_rollout(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    """A 20% rollout bucketed by targeting key, with the allocation in metadata."""
    key = ctx.targeting_key or ""
    on = sum(key.encode()) % 5 == 0
    return FlagResolutionDetails(
        value=on,
        variant="on" if on else "off",
        reason=Reason.SPLIT,
        flag_metadata={"allocationKey": "rollout-20pct" if on else "control"},
    )


def _plan_targeting(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    plan = ctx.attributes.get("plan")
    if plan == "enterprise":
        return FlagResolutionDetails(
            value="v2",
            variant="v2",
            reason=Reason.TARGETING_MATCH,
            flag_metadata={"allocation_key": "enterprise-first"},
        )
    # No variant: the code default stands (runtime_default_used in the row).
    return FlagResolutionDetails(value="v1", reason=Reason.DEFAULT)


def _provider() -> InMemoryProvider:
    return InMemoryProvider(
        {
            "new-checkout": InMemoryFlag(
                "off", {"on": True, "off": False}, context_evaluator=_percentage_rollout
            ),
            "search-backend": InMemoryFlag(
                "v1", {"v1": "v1", "v2": "v2"}, context_evaluator=_plan_targeting
            ),
            "dark-mode": InMemoryFlag(
                "enabled",
                {"enabled": True, "disabled": False},
                flag_metadata={"dd.allocation.key": "everyone"},
            ),
            "max-items": InMemoryFlag(
                "ten", {"ten": 10, "twenty": 20}, flag_metadata={"allocationKey": "default"}
            ),
        }
    )


def _context(i: int) -> EvaluationContext:
    plans = ("free", "pro", "enterprise")
    return EvaluationContext(
        targeting_key=f"user-{i % 500}",
        attributes={
            "plan": plans[i % 3],
            "country": ("US", "FR", "JP", "BR")[i % 4],
            "app": {"version": f"3.{i % 4}.0", "platform": ("ios", "android", "web")[i % 3]},
            "beta": i % 7 == 0,
            "seats": (i % 5) * 10,
        },
    )


def run_demo(threads: int, per_thread: int, tasks: int, per_task: int) -> int:
    with LocalIntake() as intake:
        telemetry = Telemetry(
            agent_url=f"http://127.0.0.1:{intake.port}",
            service="flageval-demo",
            env="local",
            version="0.1.0",
            flush_interval_s=10.0,
        )
        api.set_provider_and_wait(_provider())
        client = api.get_client("demo")
        client.add_hooks([telemetry.hook])

        def evaluate_sync(worker: int) -> None:
            for n in range(per_thread):
                i = worker * per_thread + n
                ctx = _context(i)
                client.get_boolean_value("new-checkout", False, ctx)
                client.get_string_value("search-backend", "v1", ctx)
                if n % 10 == 0:
                    client.get_integer_value("max-items", 10, ctx)
                if n % 50 == 0:
                    client.get_boolean_value("retired-flag", False, ctx)  # FLAG_NOT_FOUND

        async def evaluate_async() -> None:
            async def one(t: int) -> None:
                for n in range(per_task):
                    await client.get_boolean_value_async("dark-mode", False, _context(t + n))

            await asyncio.gather(*(one(t) for t in range(tasks)))

        started = time.perf_counter()
        pool = [threading.Thread(target=evaluate_sync, args=(w,)) for w in range(threads)]
        for t in pool:
            t.start()
        asyncio.run(evaluate_async())
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - started
        telemetry.flush(10.0)
        telemetry.shutdown(5.0)
        stats = telemetry.stats()
        api.clear_providers()
        _print_report(intake.bodies, stats, elapsed)
        return 0 if stats.conserved and not stats.pending else 1


def _print_report(bodies: list[bytes], stats: Any, elapsed: float) -> None:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    rows = 0
    for body in bodies:
        doc = json.loads(body)
        for row in doc["flagEvaluations"]:
            rows += 1
            variant = row.get("variant", {}).get("key", "(code default)")
            allocation = row.get("allocation", {}).get("key", "-")
            error = row.get("error", {}).get("message", "")
            counts[(row["flag"]["key"], variant, allocation, error)] += row["evaluation_count"]
    out = sys.stdout
    out.write(
        f"The intake received {len(bodies)} body(ies), {rows} rows, "
        f"{sum(counts.values())} evaluations ({elapsed:.2f} s of evaluating).\n\n"
    )
    header = ("flag", "variant", "allocation", "count", "error")
    table = [
        (flag, variant, allocation, str(n), error[:40])
        for (flag, variant, allocation, error), n in sorted(counts.items())
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *table]:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write("\nPipeline counters:\n")
    out.write(f"  evaluations seen      {stats.evaluations}\n")
    out.write(f"  evaluations posted    {stats.evaluations_posted} in {stats.rows_posted} rows\n")
    out.write(f"  pending               {stats.pending}\n")
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(stats.dropped.items())) or "none"
    degraded = ", ".join(f"{k}={v}" for k, v in sorted(stats.degraded.items())) or "none"
    out.write(f"  dropped               {dropped}\n")
    out.write(f"  degraded              {degraded}\n")
    verdict = "holds" if stats.conserved else "BROKEN"
    out.write(f"  conservation          {verdict} (seen = posted + dropped + pending)\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flageval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the pipeline against an embedded local intake")
    demo.add_argument("--threads", type=int, default=4)
    demo.add_argument("--per-thread", type=int, default=2_000)
    demo.add_argument("--tasks", type=int, default=50)
    demo.add_argument("--per-task", type=int, default=40)
    _bench.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return int(args.run(args))
    for name in ("threads", "per_thread", "tasks", "per_task"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    return run_demo(args.threads, args.per_thread, args.tasks, args.per_task)


if __name__ == "__main__":
    sys.exit(main())
