"""The demo behind ``python -m flageval demo``: the whole pipeline against a local intake.

A stand-in for the Datadog agent (aiohttp on 127.0.0.1, a free port) accepts and keeps
every body; an OpenFeature client with the hook evaluates five flags from threads and
asyncio tasks; the pipeline flushes and shuts down; the report shows rows exactly as the
intake received them, the evaluations per flag, variant and allocation, the counters,
and how to point the hook at a real agent. Nothing leaves the machine.

The loops are simple on purpose, so that every count can be worked out by hand
(tests/cli/test_demo.py does): 40 users, each with one fixed context.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval._config import INTAKE_PATH, Settings
from flageval._fields import hash_targeting_key
from flageval._stats import Stats
from flageval._telemetry import Telemetry

from .intake import LocalIntake

USERS = 40
#: A small per-flag cap (the default is 10,000) so that one flag overflows it.
MAX_BUCKETS_PER_FLAG = 100
#: The user whose rows the report shows.
SHOWN_USER = "user-5"
PLANS = ("free", "pro", "enterprise")
COUNTRIES = ("US", "FR", "JP", "BR")
PLATFORMS = ("ios", "android")


# -- the flags ---------------------------------------------------------------------------
def _user_number(ctx: EvaluationContext) -> int:
    return int((ctx.targeting_key or "user-0").rpartition("-")[2])


def _rollout(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    """new-checkout: on for one user in five (users 0, 5, 10, ...)."""
    on = _user_number(ctx) % 5 == 0
    return FlagResolutionDetails(
        value=on,
        variant="on" if on else "off",
        reason=Reason.SPLIT,
        flag_metadata={"allocationKey": "rollout-20pct" if on else "control"},
    )


def _by_plan(flag: InMemoryFlag[Any], ctx: EvaluationContext) -> Any:
    """search-backend: v2 for enterprise; no variant otherwise (the code default)."""
    if ctx.attributes.get("plan") == "enterprise":
        return FlagResolutionDetails(
            value="v2",
            variant="v2",
            reason=Reason.TARGETING_MATCH,
            flag_metadata={"allocation_key": "enterprise-first"},
        )
    return FlagResolutionDetails(value="v1", reason=Reason.DEFAULT)


def _provider() -> InMemoryProvider:
    return InMemoryProvider(
        {
            "new-checkout": InMemoryFlag(
                "off", {"on": True, "off": False}, context_evaluator=_rollout
            ),
            "search-backend": InMemoryFlag(
                "v1", {"v1": "v1", "v2": "v2"}, context_evaluator=_by_plan
            ),
            # This flag's metadata withholds consent: its rows carry a hashed
            # targeting key and no context.
            "dark-mode": InMemoryFlag(
                "enabled",
                {"enabled": True, "disabled": False},
                flag_metadata={
                    "dd.allocation.key": "everyone",
                    "observe_full_evaluation_data": False,
                },
            ),
            "checkout-upsell": InMemoryFlag(
                "show",
                {"show": True, "hide": False},
                flag_metadata={"allocationKey": "upsell-test"},
            ),
        }
    )


def user_context(u: int, **extra: Any) -> EvaluationContext:
    """User ``u``'s context: the same attributes on every evaluation."""
    return EvaluationContext(
        targeting_key=f"user-{u}",
        attributes={
            "plan": PLANS[u % 3],
            "country": COUNTRIES[u % 4],
            "app": {"version": f"3.{u % 3}.0", "platform": PLATFORMS[u % 2]},
            "beta": u % 5 == 0,
            "user_agent": "Mozilla/5.0 " + "x" * 288,  # over 256 characters: skipped
            **extra,
        },
    )


# -- the run -----------------------------------------------------------------------------
@dataclasses.dataclass
class Outcome:
    bodies: list[bytes]
    stats: Stats
    elapsed_s: float
    threads: int
    tasks: int


def run(threads: int, per_thread: int, tasks: int, per_task: int) -> Outcome:
    """Evaluate, flush, shut down; what the intake received and the pipeline's counters.

    Thread ``w``'s ``n``-th step is evaluation ``i = w * per_thread + n`` for user
    ``i % 40``: new-checkout and search-backend every step, checkout-upsell every 4th
    step (with a per-request id, so each one is a new bucket), retired-flag (which does
    not exist) every 50th. Async task ``t``'s ``n``-th step evaluates dark-mode for user
    ``(t + n) % 40``.
    """
    with LocalIntake() as intake:
        # Every setting given, so that no environment variable changes what the demo
        # shows or sends it anywhere but the local intake.
        settings: dict[str, Any] = {
            f.name: getattr(Settings(), f.name) for f in dataclasses.fields(Settings)
        }
        settings.update(
            intake_url=intake.url,
            service="flageval-demo",
            env="local",
            version="0.1.0",
            flush_interval_s=600.0,  # one flush, at the end
            max_buckets_per_flag=MAX_BUCKETS_PER_FLAG,
        )
        telemetry = Telemetry(**settings)
        api.set_provider_and_wait(_provider())
        client = api.get_client("flageval-demo")
        client.add_hooks([telemetry.hook])

        def evaluate_sync(w: int) -> None:
            for n in range(per_thread):
                i = w * per_thread + n
                ctx = user_context(i % USERS)
                client.get_boolean_value("new-checkout", False, ctx)
                client.get_string_value("search-backend", "v1", ctx)
                if n % 4 == 0:
                    upsell_ctx = user_context(i % USERS, request_id=f"req-{i}")
                    client.get_boolean_value("checkout-upsell", False, upsell_ctx)
                if n % 50 == 0:
                    client.get_boolean_value("retired-flag", False, ctx)

        async def evaluate_async() -> None:
            async def one(t: int) -> None:
                for n in range(per_task):
                    ctx = user_context((t + n) % USERS)
                    await client.get_boolean_value_async("dark-mode", False, ctx)

            await asyncio.gather(*(one(t) for t in range(tasks)))

        started = time.perf_counter()
        pool = [threading.Thread(target=evaluate_sync, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        asyncio.run(evaluate_async())
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - started
        telemetry.flush(10.0)
        telemetry.shutdown(5.0)
        stats = telemetry.stats()
        api.clear_providers()
        return Outcome(list(intake.bodies), stats, elapsed, threads, tasks)


def balanced(outcome: Outcome) -> bool:
    """The books balance: every evaluation posted or counted, nothing left pending, and
    the intake holds exactly what the pipeline says it posted."""
    received = sum(
        row["evaluation_count"]
        for body in outcome.bodies
        for row in json.loads(body)["flagEvaluations"]
    )
    stats = outcome.stats
    return stats.conserved and not stats.pending and received == stats.evaluations_posted


# -- the report --------------------------------------------------------------------------
WIDTH = 88


def _say(out: TextIO, text: str, indent: str = "") -> None:
    """A paragraph of prose, wrapped."""
    out.write(textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent))
    out.write("\n")


def _pick(rows: list[dict[str, Any]], *wants: Callable[[dict[str, Any]], bool]) -> Any:
    """The first row the first criterion that matches any row accepts."""
    for want in wants:
        for row in rows:
            if want(row):
                return row
    return None


def _show_row(out: TextIO, title: str, row: Mapping[str, Any] | None) -> None:
    out.write("\n")
    _say(out, title, "  ")
    if row is None:
        out.write("    (no such row this run)\n")
        return
    items = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in row.items()]
    out.write("    {" + ",\n     ".join(items) + "}\n")


def _table(out: TextIO, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        cells = [c.rjust(w) if c.isdigit() else c.ljust(w) for c, w in zip(r, widths, strict=True)]
        out.write("  " + "  ".join(cells).rstrip() + "\n")


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"


def _posts(n: int) -> str:
    return f"{n} POST" if n == 1 else f"{n} POSTs"


def _flag(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda row: bool(row["flag"]["key"] == name)


def report(outcome: Outcome, out: TextIO) -> None:
    rows = [r for body in outcome.bodies for r in json.loads(body)["flagEvaluations"]]
    stats = outcome.stats
    _say(
        out,
        f"flageval demo: {outcome.threads} threads and {outcome.tasks} asyncio tasks made "
        f"{stats.evaluations} evaluations of 5 flags through an OpenFeature client with "
        "the flageval hook, which posted them to a local stand-in for the Datadog agent on "
        "127.0.0.1. Nothing left this machine.",
    )
    out.write("\n")
    _say(
        out,
        f"What the intake received: {_posts(len(outcome.bodies))} to {INTAKE_PATH} holding "
        f"{len(rows)} rows. A row is one bucket: the evaluations that share flag, variant, "
        "allocation, error, targeting key and pruned context, with their count and the "
        "first and last time (epoch ms). The flag's value and the OpenFeature reason are "
        "never sent.",
    )
    out.write("\nThree of those rows, exactly as sent:\n")
    _show_row(
        out,
        f"1. Full data, the default: {SHOWN_USER}'s new-checkout row, with the raw targeting "
        "key and the pruned context (app flattened to app.platform and app.version; the "
        "300-character user_agent skipped).",
        _pick(
            rows,
            lambda r: _flag("new-checkout")(r) and r.get("targeting_key") == SHOWN_USER,
            lambda r: "context" in r,
        ),
    )
    shown_hash = hash_targeting_key(SHOWN_USER)
    _show_row(
        out,
        "2. No consent: dark-mode's flag metadata says observe_full_evaluation_data: false, "
        f"so {SHOWN_USER} is sent as sha256_ + the SHA-256 of the key, and no context.",
        _pick(
            rows,
            lambda r: _flag("dark-mode")(r) and r.get("targeting_key") == shown_hash,
            _flag("dark-mode"),
        ),
    )
    _show_row(
        out,
        f"3. Degraded: checkout-upsell passed max_buckets_per_flag={MAX_BUCKETS_PER_FLAG} "
        "(the demo's setting; default 10,000), so its later new buckets share one row with "
        "no targeting key and no context, counted as cardinality_cap.",
        _pick(rows, lambda r: _flag("checkout-upsell")(r) and "targeting_key" not in r),
    )

    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for row in rows:
        variant = row.get("variant", {}).get("key")
        if variant is None and row.get("runtime_default_used"):
            variant = "(code default)"
        key = (
            row["flag"]["key"],
            variant or "-",
            row.get("allocation", {}).get("key", "-"),
            row.get("error", {}).get("message", ""),
        )
        n = groups.setdefault(key, [0, 0])
        n[0] += 1
        n[1] += row["evaluation_count"]
    out.write("\n")
    _say(
        out,
        "All rows, summed per flag, variant and allocation. (code default): the provider "
        "gave no variant, so the caller got its code's default value, and the row says "
        "runtime_default_used: true.",
    )
    out.write("\n")
    _table(
        out,
        ("flag", "variant", "allocation", "rows", "evaluations", "error"),
        [(f, v, a, str(n[0]), str(n[1]), e[:40]) for (f, v, a, e), n in sorted(groups.items())],
    )

    out.write("\nThe pipeline's own counters (telemetry.stats()):\n")
    out.write(
        f"  evaluations   {stats.evaluations} seen by the hook "
        f"(in {outcome.elapsed_s:.2f} s of evaluating)\n"
    )
    out.write(
        f"  posted        {stats.evaluations_posted} in {stats.rows_posted} rows, "
        f"{_posts(stats.bodies_posted)}\n"
    )
    out.write(f"  pending       {stats.pending}\n")
    out.write(f"  dropped       {_counts(stats.dropped)}\n")
    out.write(
        f"  degraded      {_counts(stats.degraded)}"
        f"{' (posted without targeting key and context)' if stats.degraded else ''}\n"
    )
    verdict = "holds" if stats.conserved else "BROKEN"
    out.write(f"  conservation  {verdict}: evaluations = posted + dropped + pending\n")

    out.write("\n")
    _say(
        out,
        "Next, send to a real Datadog agent: say where it listens and which service you are, "
        "then add the hook once at start-up.",
    )
    out.write(
        "  export DD_TRACE_AGENT_URL=http://localhost:8126  # or DD_AGENT_HOST=my-agent\n"
        "  export DD_SERVICE=checkout DD_ENV=prod\n"
        "  # in the application:\n"
        "  from openfeature import api\n"
        "  from flageval import FlagEvalHook\n"
        "  api.add_hooks([FlagEvalHook()])\n"
    )
    _say(
        out,
        "To send hashed targeting keys and no contexts unless a flag's metadata consents: "
        "FLAGEVAL_FULL_DATA_DEFAULT=false. Settings, wire format and guarantees: README.md "
        "and docs/, in:",
    )
    out.write(f"  {manual()}\n")


def manual() -> Path:
    """Where README.md and docs/ are: installed with the package (a wheel), else in the
    source tree the package runs from (an editable install)."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "manual"
    return installed if (installed / "README.md").is_file() else package.parent
