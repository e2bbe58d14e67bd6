"""flageval.ofrep.server: what a 304 saves, replicas agreeing, streams told, requests/s.

Method
- The flags: 50 flagd flags of five kinds in turn (static; ``ends_with`` on an email;
  ``fractional`` 50/50 on the targeting key; ``sem_ver``; ``in`` on a country list),
  one file; the context: a targeting key and four attributes that the rules read.
- Every server is a subprocess (``python -m flageval.ofrep.server``), telemetry off
  (the killswitch: fast-feature counts nothing either), access log off, polling every
  50 ms. ``evaluating`` runs with ``--cache-capacity 0`` (every 200 evaluates the 50
  flags), ``cached`` with the default cache. They read the same file: they are also
  the two replicas whose ETags are compared.
- Cost (benchmark 1): the server's own CPU time per request, from
  ``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU, every thread), around a block
  of requests over one keep-alive connection; blocks of the three paths (200
  evaluated, 200 from the cache, 304) alternate in rounds, the order rotated per round;
  the ratio to the evaluated 200 is taken per round, and its median reported.
- Replicas (benchmark 2): 1,000 distinct contexts to each; the ETags must be equal
  context by context (asserted: a correctness fact, not a figure), and all distinct.
- Streams (benchmark 3): 100 SSE connections to ``cached``, the file changed, the time
  from the server's swap (``lastChange`` of ``/ofrep/server/status``, wall clock) to
  the ``refetchEvaluation`` arriving on each stream; the slowest stream per round.
- Requests per second (benchmark 4): 8 concurrent keep-alive aiohttp connections for 1 s
  per block against each server and path: ours (200 evaluated, 200 cached, 304) and
  fast-feature 0.0.2 (uvicorn, access log off, the same 50 flag definitions through its
  admin API; 200 and 304 with its own ETag). The client shares the machine with the
  server: figures are comparable with each other, not with a dedicated load generator.
- No assertion on any timing figure. Under ``--benchmark-disable`` every benchmark runs
  once on small inputs (one round, few requests, few streams).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ofrep.server.process import ServerProcess, wait_until

N_FLAGS = 50
CONTEXT = {
    "targetingKey": "user-00042",
    "email": "ada@macrosoft.com",
    "version": "2.1.0",
    "country": "CA",
    "plan": "pro",
}
BULK = "/ofrep/v1/evaluate/flags"


def flag(i: int) -> dict[str, Any]:
    on_off = {"on": True, "off": False}
    rules: list[Any] = [
        None,
        {"if": [{"ends_with": [{"var": "email"}, "@macrosoft.com"]}, "on", "off"]},
        {"fractional": [["on", 50], ["off", 50]]},
        {"if": [{"sem_ver": [{"var": "version"}, ">=", "2.0.0"]}, "on", "off"]},
        {"if": [{"in": [{"var": "country"}, ["CA", "MX", "US"]]}, "on", "off"]},
    ]
    rule = rules[i % 5]
    out: dict[str, Any] = {"state": "ENABLED", "variants": on_off, "defaultVariant": "off"}
    if rule is not None:
        out["targeting"] = rule
    return out


def flags_doc() -> dict[str, Any]:
    return {"flags": {f"flag-{i:02d}": flag(i) for i in range(N_FLAGS)}}


def cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU of every thread of ``pid`` so far."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


class Conn:
    """One keep-alive connection to a server."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes, etag: str | None = None) -> tuple[int, str | None]:
        headers = {"Content-Type": "application/json"}
        if etag is not None:
            headers["If-None-Match"] = etag
        self.http.request("POST", BULK, body=body, headers=headers)
        response = self.http.getresponse()
        response.read()
        return response.status, response.getheader("ETag")


@pytest.fixture(scope="module")
def flag_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-server") / "flags.json"
    path.write_text(json.dumps(flags_doc()))
    return path


@pytest.fixture(scope="module")
def evaluating(flag_file: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess([flag_file], "--cache-capacity", "0", "--no-access-log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def cached(flag_file: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess([flag_file], "--no-access-log")
    yield srv
    srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fast_feature() -> Iterator[str]:
    """fast-feature under uvicorn, its in-memory store filled with the same flags."""
    port = _free_port()
    env = {**os.environ, "FAST_FEATURE_BACKEND": "inmemory", "FAST_FEATURE_ADMIN": "true"}
    app = "fast_feature.server.app:Application.create"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return proc.poll() is not None

    try:
        wait_until(up, 20.0, "fast-feature listening")
        for key, definition in flags_doc()["flags"].items():
            body = {
                "key": key,
                "variants": definition["variants"],
                "default_variant": definition["defaultVariant"],
                "targeting": definition.get("targeting"),
            }
            req = urllib.request.Request(
                url + "/admin/api/flags",
                json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 201
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _rounds(quick: bool, full: int) -> int:
    return 1 if quick else full


def test_304_costs_against_an_evaluated_200(
    benchmark: Any, quick: bool, evaluating: ServerProcess, cached: ServerProcess
) -> None:
    body = json.dumps({"context": CONTEXT}).encode()
    ev, ca = Conn(evaluating.port), Conn(cached.port)
    status, etag = ev.post(body)
    assert status == 200 and etag is not None
    assert ca.post(body) == (200, etag)  # the replica agrees; and its cache is warm
    per_block = 20 if quick else 400
    paths = {
        "200_evaluated": (evaluating.proc.pid, lambda: ev.post(body)),
        "200_cached": (cached.proc.pid, lambda: ca.post(body)),
        "304": (evaluating.proc.pid, lambda: ev.post(body, etag)),
    }
    expected = {"200_evaluated": 200, "200_cached": 200, "304": 304}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    wall: dict[str, list[float]] = {k: [] for k in paths}

    def run() -> None:
        names = list(paths)
        for r in range(_rounds(quick, 15)):
            for name in names[r % 3 :] + names[: r % 3]:
                pid, call = paths[name]
                c0, w0 = cpu_ns(pid), time.perf_counter()
                for _ in range(per_block):
                    assert call()[0] == expected[name]
                w1, c1 = time.perf_counter(), cpu_ns(pid)
                cpu[name].append((c1 - c0) / per_block / 1000)
                wall[name].append((w1 - w0) / per_block * 1e6)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratios = {
        name: statistics.median(a / b for a, b in zip(cpu[name], cpu["200_evaluated"], strict=True))
        for name in ("304", "200_cached")
    }
    benchmark.extra_info.update(
        {
            "server_cpu_us_median": {k: round(statistics.median(v), 1) for k, v in cpu.items()},
            "client_wall_us_median": {k: round(statistics.median(v), 1) for k, v in wall.items()},
            "ratio_304_to_200_evaluated": round(ratios["304"], 3),
            "ratio_200_cached_to_200_evaluated": round(ratios["200_cached"], 3),
            "requests_per_block": per_block,
        }
    )


def test_two_replicas_agree_on_every_etag(
    benchmark: Any, quick: bool, evaluating: ServerProcess, cached: ServerProcess
) -> None:
    n = 50 if quick else 1000
    contexts = [
        {
            **CONTEXT,
            "targetingKey": f"user-{i}",
            "email": f"u{i}@{'macrosoft.com' if i % 2 else 'x.org'}",
        }
        for i in range(n)
    ]
    one, two = Conn(evaluating.port), Conn(cached.port)
    pairs: list[tuple[str | None, str | None]] = []
    # both have read the file as it is now (another benchmark may just have changed it)
    wait_until(lambda: evaluating.status()["flagSets"] == cached.status()["flagSets"])

    def run() -> None:
        pairs.clear()
        for context in contexts:
            body = json.dumps({"context": context}).encode()
            pairs.append((one.post(body)[1], two.post(body)[1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert all(a == b and a is not None for a, b in pairs)
    assert len({a for a, _ in pairs}) == n
    benchmark.extra_info.update({"contexts": n, "identical": sum(a == b for a, b in pairs)})


async def _stream_round(port: int, path: Path, n_streams: int, flip: int) -> float:
    """Seconds from the server's swap to the slowest stream's event."""
    arrived: list[float] = []
    connector = aiohttp.TCPConnector(limit=n_streams + 1)  # the streams and one more
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        streams = [
            await session.get(f"http://127.0.0.1:{port}/ofrep/v1/sse") for _ in range(n_streams)
        ]
        for s in streams:
            assert await s.content.readline() == b": connected\n"

        async def first_event(s: aiohttp.ClientResponse) -> None:
            while True:
                line = await s.content.readline()
                if line.startswith(b"data:"):
                    arrived.append(time.time())
                    return

        waiting = [asyncio.ensure_future(first_event(s)) for s in streams]
        doc = flags_doc()
        doc["flags"]["flag-00"]["defaultVariant"] = "on" if flip % 2 else "off"
        aside = path.with_suffix(".tmp")
        aside.write_text(json.dumps(doc))
        os.replace(aside, path)
        await asyncio.wait_for(asyncio.gather(*waiting), 20)
        async with session.get(f"http://127.0.0.1:{port}/ofrep/server/status") as resp:
            changed_at = (await resp.json())["files"]["lastChange"]
        for s in streams:
            s.close()
    return max(arrived) - changed_at


def test_a_change_reaches_every_stream(
    benchmark: Any, quick: bool, cached: ServerProcess, flag_file: Path
) -> None:
    n_streams = 5 if quick else 100
    slowest: list[float] = []

    def run() -> None:
        for r in range(_rounds(quick, 7)):
            slowest.append(asyncio.run(_stream_round(cached.port, flag_file, n_streams, r + 1)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {
            "streams": n_streams,
            "slowest_stream_ms_per_round": [round(x * 1000, 1) for x in slowest],
            "slowest_stream_ms_max": round(max(slowest) * 1000, 1),
        }
    )


async def _load(url: str, body: bytes, etag: str | None, seconds: float, conns: int) -> float:
    headers = {"Content-Type": "application/json"}
    if etag is not None:
        headers["If-None-Match"] = etag
    done = 0
    expected = 304 if etag is not None else 200
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector) as session:
        end = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                async with session.post(url + BULK, data=body, headers=headers) as resp:
                    await resp.read()
                    assert resp.status == expected
                done += 1

        await asyncio.gather(*(worker() for _ in range(conns)))
        return done / (time.perf_counter() - started)


def test_requests_per_second_against_fast_feature(
    benchmark: Any,
    quick: bool,
    evaluating: ServerProcess,
    cached: ServerProcess,
    fast_feature: str,
) -> None:
    body = json.dumps({"context": CONTEXT}).encode()
    ours_etag = Conn(evaluating.port).post(body)[1]
    status, ff_etag = Conn(int(fast_feature.rsplit(":", 1)[1])).post(body)
    assert status == 200 and ff_etag is not None
    seconds = 0.2 if quick else 1.0
    variants = {
        "flageval_200_evaluated": (evaluating.url, None),
        "flageval_200_cached": (cached.url, None),
        "flageval_304": (evaluating.url, ours_etag),
        "fast_feature_200": (fast_feature, None),
        "fast_feature_304": (fast_feature, ff_etag),
    }
    rps: dict[str, list[float]] = {k: [] for k in variants}

    def run() -> None:
        names = list(variants)
        for r in range(_rounds(quick, 5)):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                url, etag = variants[name]
                rps[name].append(asyncio.run(_load(url, body, etag, seconds, 8)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    medians = {k: round(statistics.median(v)) for k, v in rps.items()}
    benchmark.extra_info.update(
        {
            "requests_per_s_median": medians,
            "ratio_200_to_fast_feature": round(
                medians["flageval_200_evaluated"] / medians["fast_feature_200"], 2
            ),
            "ratio_304_to_fast_feature": round(
                medians["flageval_304"] / medians["fast_feature_304"], 2
            ),
        }
    )
