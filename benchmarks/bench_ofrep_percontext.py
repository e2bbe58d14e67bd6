"""flageval.ofrep per-context evaluation against the contrib OFREP provider
(``openfeature-provider-ofrep`` 0.3.0: one ``POST /ofrep/v1/evaluate/flags/{key}`` per
evaluation) and flageval's static model, on the same local server.

Method
- One scriptable OFREP + SSE server (tests/ofrep/ofrep_server.py) on 127.0.0.1 whose
  answer depends on the context: flag ``who`` is the targeting key and plan, beside 9
  static flags (an answer of ~1.1 KB). Providers are registered under domains of their
  own; no hook is attached.
- Warm evaluations: ``USERS`` users (10,000) drawn Zipf-like (weight 1/rank), 4
  threads, a new ``EvaluationContext(user, {"plan": ...})`` per evaluation, through
  ``client.get_string_details``; each call timed with ``perf_counter_ns``. Ours: every
  user is evaluated twice first (the warm-up: one bulk fetch each; while few contexts
  have come back, a first sight goes to the single-flag endpoint), then
  ``EVALS_PER_THREAD`` per thread are measured; requests per evaluation are the server's
  requests during the measured phase over its evaluations. Every answer is checked to
  be the evaluation's own user's (``wrong``); the static provider answers its one
  context, so its ``wrong`` counts every other user's evaluation. The contrib provider
  is measured over ``CONTRIB_EVALS`` per thread (each is a request).
- Change latency: from announcing a change (the flag changed, then a
  ``refetchEvaluation`` pushed on the stream) to a recently used context being served
  the new value, spinning on its evaluation.
- Errors: cached contexts evaluated while the server answers 500, then while it is
  down (connections refused); errors counted.
- Memory: the cache alone (``ContextCache``) fed ``MEMORY_CONTEXTS`` (1,000,000)
  distinct contexts' parsed answers under a 64 MiB budget; then the kept entries'
  objects are measured (``sys.getsizeof`` over every object they reach, each counted
  once: keys, ETags, answers, flag entries, metadata) against the budget, entries kept
  and evictions counted. (``tracemalloc`` over the run agrees within 2% on 5,000
  contexts (28.6 MB traced, 28.3 MB so measured), but makes a million take ten minutes.)
- Contexts unique per evaluation (a request id in each; 1,000 users Zipf-like, 4 x
  1,000 evaluations, default settings otherwise): the admission rule (``"auto"``),
  every context a bulk fetch (``"never"``), and ``context_key_attributes=["plan"]``;
  per-context requests per evaluation (first fetches, single-flag requests and the
  revalidations the stream's connect asks for), entries kept, and answers
  that are not the user's (the code default after ``context_wait_s``, counted too).
- No assertion on wall-clock figures. Under ``--benchmark-disable`` every benchmark
  runs once on a small input.
"""

from __future__ import annotations

import itertools
import json
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider as ContribProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider import AbstractProvider
from openfeature.provider.no_op_provider import NoOpProvider
from yarl import URL

from flageval.ofrep import OFREPProvider
from flageval.ofrep._bulk import parse_bulk
from flageval.ofrep._contexts import BYTES_PER_ANSWER_BYTE, ContextCache
from flageval.ofrep._diagnostics import Counter, new_stats
from tests.ofrep.helpers import DOWN
from tests.ofrep.ofrep_server import OFREPTestServer, refetch

THREADS = 4
USERS = 10_000
EVALS_PER_THREAD = 25_000
CONTRIB_EVALS = 500
MEMORY_CONTEXTS = 1_000_000
MEMORY_BUDGET = 64 * 1024 * 1024
CHANGE_ROUNDS = 10


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"users": 200, "evals": 500, "contrib": 20, "memory": 5_000, "rounds": 2}
    return {
        "users": USERS,
        "evals": EVALS_PER_THREAD,
        "contrib": CONTRIB_EVALS,
        "memory": MEMORY_CONTEXTS,
        "rounds": CHANGE_ROUNDS,
    }


class Answers:
    def __init__(self) -> None:
        self.version = 1

    def __call__(self, ctx: dict[str, Any]) -> dict[str, dict[str, Any]]:
        who = f"{ctx.get('targetingKey', '')}|{ctx.get('plan', '')}|{self.version}"
        flags = {"who": {"key": "who", "value": who, "variant": "v", "reason": "TARGETING_MATCH"}}
        for i in range(9):
            flags[f"flag-{i}"] = {
                "key": f"flag-{i}",
                "value": i % 2 == 0,
                "variant": "on" if i % 2 == 0 else "off",
                "reason": "STATIC",
                "metadata": {"allocationKey": "a1", "flagSetId": "bench"},
            }
        return flags


@pytest.fixture
def server() -> Iterator[tuple[OFREPTestServer, Answers]]:
    srv = OFREPTestServer().start()
    answers = Answers()
    srv.flags_for_context = answers
    srv.event_streams = [srv.sse_here()]
    yield srv, answers
    srv.stop()


def _plan(user: int) -> str:
    return "pro" if user % 3 == 0 else "free"


def _draws(users: int, count: int, seed: int) -> list[int]:
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(users)))
    return random.Random(seed).choices(range(users), cum_weights=weights, k=count)


def _register(provider: AbstractProvider, domain: str) -> Any:
    api.set_provider_and_wait(provider, domain=domain)
    return api.get_client(domain)


def _unregister(domain: str) -> None:
    api.set_provider(NoOpProvider(), domain=domain)


def _run_threads(client: Any, draws: list[list[int]], version: int = 1) -> dict[str, Any]:
    times: list[list[int]] = [[] for _ in draws]
    wrong = [0] * len(draws)
    errors = [0] * len(draws)

    def run(n: int) -> None:
        clock, out = time.perf_counter_ns, times[n]
        for user in draws[n]:
            ctx = EvaluationContext(f"user-{user}", {"plan": _plan(user)})
            t0 = clock()
            details = client.get_string_details("who", "default", ctx)
            out.append(clock() - t0)
            if details.error_code is not None:
                errors[n] += 1
            elif details.value != f"user-{user}|{_plan(user)}|{version}":
                wrong[n] += 1

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(draws))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = sorted(itertools.chain.from_iterable(times))
    return {
        "evaluations": len(flat),
        "p50_us": round(flat[len(flat) // 2] / 1000, 2),
        "p99_us": round(flat[int(len(flat) * 0.99)] / 1000, 2),
        "errors": sum(errors),
        "wrong": sum(wrong),
    }


def _warm(
    server: tuple[OFREPTestServer, Answers],
    make: Callable[[str], AbstractProvider],
    domain: str,
    users: int,
    evals: int,
    warm_up: bool,
) -> dict[str, Any]:
    srv, _ = server
    client = _register(make(srv.url), domain)
    try:
        if warm_up:  # twice: a first sight may go to the single-flag endpoint
            everyone = list(range(users))
            for _ in range(2):
                _run_threads(client, [everyone[n::THREADS] for n in range(THREADS)])
        draws = [_draws(users, evals, seed) for seed in range(THREADS)]
        before = len(srv.all_requests())
        result = _run_threads(client, draws)
        result["requests_per_evaluation"] = round(
            (len(srv.all_requests()) - before) / result["evaluations"], 4
        )
        return result
    finally:
        _unregister(domain)


def _ours(url: str) -> OFREPProvider:
    return OFREPProvider(base_url=url, cache_mode="disabled", context_wait_s=10.0)


@pytest.mark.parametrize("who", ["ours", "static", "contrib"])
def test_warm_evaluations_zipf_4_threads(
    benchmark: Any, server: tuple[OFREPTestServer, Answers], quick: bool, who: str
) -> None:
    size = _sizes(quick)
    makers: dict[str, Callable[[str], AbstractProvider]] = {
        "ours": _ours,
        "static": lambda url: OFREPProvider(
            base_url=url, cache_mode="disabled", context_model="static"
        ),
        "contrib": ContribProvider,
    }
    evals = size["contrib"] if who == "contrib" else size["evals"]
    result = benchmark.pedantic(
        _warm,
        args=(server, makers[who], f"bench-pc-{who}", size["users"], evals, who == "ours"),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info.update(result)
    print(f"\n{who}: {result}")
    if who == "ours":
        assert result["wrong"] == 0 and result["errors"] == 0


def test_a_change_on_the_stream_reaches_a_recent_context(
    benchmark: Any, server: tuple[OFREPTestServer, Answers], quick: bool
) -> None:
    srv, answers = server
    size = _sizes(quick)
    provider = _ours(srv.url)
    client = _register(provider, "bench-pc-change")
    deadline = time.monotonic() + 5
    while srv.sse_connected < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    recent = [EvaluationContext(f"user-{u}", {"plan": _plan(u)}) for u in range(20)]

    def rounds() -> list[float]:
        out = []
        for _ in range(size["rounds"]):
            for ctx in recent:
                client.get_string_value("who", "", ctx)
            time.sleep(0.3)  # past the event-fetch interval: each round one change
            answers.version += 1
            want = f"user-7|{_plan(7)}|{answers.version}"
            t0 = time.perf_counter()
            srv.push(refetch(etag=f"v{answers.version}"))
            while client.get_string_value("who", "", recent[7]) != want:
                if time.perf_counter() - t0 > 5:
                    break
            out.append((time.perf_counter() - t0) * 1000)
        return out

    try:
        got = benchmark.pedantic(rounds, rounds=1, iterations=1)
    finally:
        _unregister("bench-pc-change")
    info = {"median_ms": round(statistics.median(got), 1), "max_ms": round(max(got), 1)}
    benchmark.extra_info.update(info)
    print(f"\nchange: {info}")


@pytest.mark.parametrize("who", ["ours", "contrib"])
def test_errors_for_cached_contexts_while_the_server_fails(
    benchmark: Any, quick: bool, who: str
) -> None:
    srv = OFREPTestServer().start()
    srv.flags_for_context = Answers()
    srv.event_streams = [srv.sse_here()]
    domain = f"bench-pc-errors-{who}"
    provider = _ours(srv.url) if who == "ours" else ContribProvider(srv.url)
    client = _register(provider, domain)
    users = [EvaluationContext(f"user-{u}", {"plan": _plan(u)}) for u in range(50)]
    for ctx in users:
        client.get_string_value("who", "", ctx)
    deadline = time.monotonic() + 5
    while who == "ours" and srv.sse_connected < 1 and time.monotonic() < deadline:
        time.sleep(0.005)

    def failing() -> dict[str, int]:
        srv.script.extend([DOWN] * 10_000)
        srv.push(refetch(etag="v2"))  # ours: every recent context revalidated, and fails
        deadline = time.monotonic() + 5
        while isinstance(provider, OFREPProvider) and time.monotonic() < deadline:
            if provider.stats()["context_fetch_failed"] > 0:
                break
            time.sleep(0.005)
        err_5xx = sum(
            client.get_string_details("who", "", ctx).error_code is not None
            for _ in range(4)
            for ctx in users
        )
        srv.stop()
        err_down = sum(
            client.get_string_details("who", "", ctx).error_code is not None
            for _ in range(4)
            for ctx in users
        )
        out = {"evaluations_each": 4 * len(users), "errors_5xx": err_5xx, "errors_down": err_down}
        if isinstance(provider, OFREPProvider):
            out["failed_requests"] = provider.stats()["context_fetch_failed"]
        return out

    try:
        result = benchmark.pedantic(failing, rounds=1, iterations=1)
    finally:
        _unregister(domain)
    benchmark.extra_info.update(result)
    print(f"\n{who} errors: {result}")
    if who == "ours":
        assert result["errors_5xx"] == 0 and result["errors_down"] == 0


def _deep_size(root: object) -> int:
    """Bytes of every object reachable from ``root``, each counted once."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        else:
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
    return total


def test_memory_with_a_million_distinct_contexts(benchmark: Any, quick: bool) -> None:
    count = _sizes(quick)["memory"]
    answers = Answers()
    stats = new_stats()
    base = URL("http://127.0.0.1")
    encoder = msgspec.json.Encoder()
    flags = list(answers({"targetingKey": "@U@", "plan": "@P@"}).values())
    template = json.dumps({"flags": flags}).encode()

    def feed() -> dict[str, Any]:
        cache = ContextCache(10_000_000, MEMORY_BUDGET, stats)
        for n in range(count):
            user = f"user-{n}".encode()
            plan = _plan(n).encode()
            body = template.replace(b"@U@", user).replace(b"@P@", plan)
            fetched = parse_bulk(body, f'"e{n}"', base)
            assert not isinstance(fetched, Exception)
            key = b'{"context":{"plan":"%s","targetingKey":"%s"}}' % (plan, user)
            size = len(encoder.encode(fetched.items)) * BYTES_PER_ANSWER_BYTE  # type: ignore[union-attr]
            cache.store(key, fetched.entries, fetched.etag, size, 0)  # type: ignore[union-attr]
        kept, estimated = cache.sizes()
        return {
            "contexts": count,
            "kept": kept,
            "evicted": stats[Counter.CONTEXT_EVICTIONS],
            "estimated_mib": round(estimated / 2**20, 1),
            "measured_mib": round(_deep_size(cache.kept()) / 2**20, 1),
            "budget_mib": MEMORY_BUDGET / 2**20,
        }

    result = benchmark.pedantic(feed, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    print(f"\nmemory: {result}")
    assert result["kept"] + result["evicted"] == count
    assert result["measured_mib"] <= result["budget_mib"]


def _unique(
    server: tuple[OFREPTestServer, Answers], kwargs: dict[str, Any], users: int, evals: int
) -> dict[str, Any]:
    """Contexts unique per evaluation (a request id in each): what each choice costs."""
    srv, _ = server
    domain = f"bench-pc-unique-{sorted(kwargs.items())}"
    provider = OFREPProvider(base_url=srv.url, cache_mode="disabled", **kwargs)
    client = _register(provider, domain)
    counter = itertools.count()
    times: list[int] = []
    failures = 0
    lock = threading.Lock()

    def run(seed: int) -> None:
        nonlocal failures
        mine, bad = [], 0
        for user in _draws(users, evals, seed):
            ctx = EvaluationContext(
                f"user-{user}", {"plan": _plan(user), "request_id": next(counter)}
            )
            t0 = time.perf_counter_ns()
            details = client.get_string_details("who", "default", ctx)
            mine.append(time.perf_counter_ns() - t0)
            bad += details.value != f"user-{user}|{_plan(user)}|1"
        with lock:
            times.extend(mine)
            failures += bad

    try:
        threads = [threading.Thread(target=run, args=(seed,)) for seed in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = provider.stats()
        kept = provider._per.cache.sizes()[0] if provider._per is not None else 0
    finally:
        _unregister(domain)
    times.sort()
    return {
        "evaluations": len(times),
        "p50_us": round(times[len(times) // 2] / 1000, 1),
        "p99_us": round(times[int(len(times) * 0.99)] / 1000, 1),
        "requests_per_evaluation": round(stats["context_fetches"] / len(times), 3),
        "revalidations": stats["context_revalidations"],
        "bulk_fetches": stats["context_fetch_ok"] - stats["context_single_flag"],
        "single_flag": stats["context_single_flag"],
        "entries_kept": kept,
        "not_the_users_value": failures,
    }


@pytest.mark.parametrize("choice", ["auto", "never", "key_attributes"])
def test_contexts_unique_per_evaluation(
    benchmark: Any, server: tuple[OFREPTestServer, Answers], quick: bool, choice: str
) -> None:
    kwargs: dict[str, Any] = {
        "auto": {},
        "never": {"context_single_flag": "never"},
        "key_attributes": {"context_key_attributes": ["plan"]},
    }[choice]
    users, evals = (50, 100) if quick else (1_000, 1_000)
    result = benchmark.pedantic(
        _unique, args=(server, kwargs, users, evals), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    print(f"\nunique {choice}: {result}")
