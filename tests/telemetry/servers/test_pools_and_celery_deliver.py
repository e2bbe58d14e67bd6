"""Worker processes deliver every evaluation when their pool stops, with no code from
the user: ``multiprocessing.Pool`` and ``ProcessPoolExecutor`` under the fork,
forkserver and spawn start methods (their workers end through ``os._exit``, so
``atexit`` never runs there), a pool ended by ``terminate()`` (its ``with`` block, and
while its workers are still in their tasks), and
Celery's default prefork pool (billiard) at a warm shutdown and when it replaces a
child (``--max-tasks-per-child``).

Each is a real subprocess against the real intake on 127.0.0.1: 2,000 evaluations with
distinct targeting keys, made in the workers only, with a 60 s flush interval (nothing
is posted before the stop). The intake must then hold each key exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO

import pytest

from tests.intake import Intake

REPO = Path(__file__).resolve().parents[3]
N = 2_000
EXPECTED = Counter({f"user-{i}": 1 for i in range(N)})
METHODS = ("fork", "forkserver", "spawn")
POOLS = {
    "multiprocessing": [("pool", method) for method in METHODS],
    "terminate": [("pool-with", "fork"), ("pool-with", "spawn"), ("terminate-busy", "fork")],
    "concurrent.futures": [("executor", method) for method in METHODS],
}


def _env(intake: Intake, service: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env.update(
        DD_TRACE_AGENT_URL=intake.url,
        DD_SERVICE=service,
        FLAGEVAL_FLUSH_INTERVAL_S="60",
        PYTHONPATH=str(REPO),
        **extra,
    )
    return env


def _delivered(intake: Intake, service: str) -> Counter[str]:
    """Evaluations the intake accepted from ``service``, by targeting key."""
    out: Counter[str] = Counter()
    for rec in intake.accepted():
        body = rec.json()
        if body["context"]["service"] == service:
            for row in body["flagEvaluations"]:
                out[row["targeting_key"]] += row["evaluation_count"]
    return out


@pytest.mark.parametrize("module", list(POOLS))
def test_pool_workers_deliver_every_evaluation_when_the_pool_stops(
    intake: Intake, module: str
) -> None:
    """The module's pools run at once, each in its own process, each its own service."""
    procs = {
        (kind, method): subprocess.Popen(
            [sys.executable, "-m", "tests.telemetry.servers.pool_app", kind, method],
            cwd=REPO,
            env=_env(intake, f"{kind}-{method}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for kind, method in POOLS[module]
    }
    outputs = {}
    try:
        for case, proc in procs.items():
            outputs[case] = proc.communicate(timeout=120)[0]
            assert proc.returncode == 0, (case, outputs[case])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for (kind, method), output in outputs.items():
        pids = output.strip().splitlines()[-1]
        assert pids.count(",") == 1, (kind, method, output)  # two workers evaluated
        assert _delivered(intake, f"{kind}-{method}") == EXPECTED, (kind, method, output)


class _CeleryWorker:
    """A Celery worker with two prefork children, its 20 tasks of 100 evaluations queued
    in a filesystem broker of its own under ``folder``."""

    def __init__(self, intake: Intake, folder: Path, service: str, *extra: str) -> None:
        for sub in ("queue", "processed", "done"):
            (folder / sub).mkdir(parents=True)
        self.folder, self.service = folder, service
        env = _env(intake, service, CELERY_FOLDER=str(folder))
        send = "from tests.telemetry.servers.celery_app import evaluate\n"
        send += f"for start in range(0, {N}, 100): evaluate.delay(start, 100)\n"
        subprocess.run([sys.executable, "-c", send], cwd=REPO, env=env, check=True, timeout=60)
        self.log = (folder / "worker.log").open("w+")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "tests.telemetry.servers.celery_app"),
                *("worker", "-P", "prefork", "-c", "2", "--loglevel", "WARNING"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip", *extra),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

    def tasks_done(self) -> bool:
        assert self.proc.poll() is None, _read(self.log)
        return len(list((self.folder / "done").iterdir())) == N // 100

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_celery_prefork_children_deliver_every_evaluation(intake: Intake, tmp_path: Path) -> None:
    """Two workers at once, each with two prefork children running 20 tasks of 100
    evaluations, then SIGTERM (a warm shutdown) once all have run. Without recycling
    nothing is posted before the stop; with ``--max-tasks-per-child 5`` each child is
    replaced after 5 tasks, and each replaced child delivers as it ends."""
    workers = [
        _CeleryWorker(intake, tmp_path / "plain", "celery"),
        _CeleryWorker(
            intake, tmp_path / "recycled", "celery-recycled", "--max-tasks-per-child", "5"
        ),
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(w.tasks_done() for w in workers):
            assert time.monotonic() < deadline, [_read(w.log) for w in workers]
            time.sleep(0.05)
        assert _delivered(intake, "celery") == Counter()  # nothing posted before the stop
        for w in workers:
            w.proc.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.proc.wait(60) == 0, _read(w.log)
    finally:
        for w in workers:
            w.stop()
    for w in workers:
        assert _delivered(intake, w.service) == EXPECTED, (w.service, _read(w.log))


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()


def test_watching_for_pool_exits_imports_no_pool_module(intake: Intake) -> None:
    """A worker started in a plain process (the hooks are looked up, never imported)
    leaves multiprocessing, billiard and Celery unimported."""
    script = (
        "import sys\n"
        "from openfeature import api\n"
        "from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider\n"
        "import flageval\n"
        "api.set_provider_and_wait(InMemoryProvider({'f': InMemoryFlag('on', {'on': True})}))\n"
        "api.add_hooks([flageval.FlagEvalHook()])\n"
        "api.get_client().get_boolean_value('f', False)\n"
        "assert flageval.default_telemetry().running\n"
        "print([m for m in ('multiprocessing', 'billiard', 'celery') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=_env(intake, "plain"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    assert intake.evaluations() == 1  # delivered at exit
