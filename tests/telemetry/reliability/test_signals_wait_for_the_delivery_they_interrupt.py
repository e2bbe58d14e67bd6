"""A deadly stop signal (SIGTERM left to its default action) that interrupts the
delivery it would trigger anyway is held until that delivery is done, then the process
dies of it as before: during the process's own end (a pool's ``terminate()`` signals
its workers while their exit hooks deliver), and during the start of a worker (the
shutdown waits for the start the signal interrupted). Each a real process, killed by
the real signal, against the real intake."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.intake import Intake

pytestmark = pytest.mark.reliability

COMMON = """
    import os, signal, sys
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
    import flageval, flageval._process as process

    api.set_provider_and_wait(InMemoryProvider({"f": InMemoryFlag("on", {"on": True})}))
    client = api.get_client()
"""


def _run(intake: Intake, script: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env["INTAKE_URL"] = intake.url
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COMMON) + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sigterm_during_the_process_end_waits_for_its_delivery(intake: Intake) -> None:
    """The end (what a pool child's finalizer runs) is interrupted by SIGTERM while the
    pipeline's shutdown waits for its worker (as a pool's ``terminate()`` does to a
    worker whose finalizer is delivering): all 300 evaluations are delivered, then the
    process dies of the signal (exit status -15)."""
    done = _run(
        intake,
        """
        import flageval._runner as runner_module

        tel = flageval.Telemetry(agent_url=os.environ["INTAKE_URL"], service="t",
                                 flush_interval_s=60)
        client.add_hooks([tel.hook])
        for i in range(300):
            client.get_boolean_value("f", False, EvaluationContext(f"user-{i}"))
        real_call = runner_module.Runner.call

        def interrupted_call(self, coro, timeout_s):
            runner_module.Runner.call = real_call
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, mid-shutdown
            return real_call(self, coro, timeout_s)

        runner_module.Runner.call = interrupted_call
        process.ending()
        print("survived the signal")
        """,
    )
    assert done.returncode == -signal.SIGTERM, done.stdout + done.stderr[-2000:]
    assert "survived" not in done.stdout
    assert intake.evaluations() == 300


def test_sigterm_during_a_start_waits_for_the_shutdown_it_defers(intake: Intake) -> None:
    """SIGTERM arrives while ``start()`` starts the worker of a pipeline that queued 50
    evaluations: the shutdown runs once the start is done, delivering the 50, then the
    process dies of the signal."""
    done = _run(
        intake,
        """
        import flageval._worker as worker_module

        tel = flageval.Telemetry(agent_url=os.environ["INTAKE_URL"], service="t",
                                 flush_interval_s=60, autostart=False)
        client.add_hooks([tel.hook])
        for i in range(50):
            client.get_boolean_value("f", False, EvaluationContext(f"user-{i}"))
        real_init = worker_module.Worker.__init__

        def interrupted_init(self, *args, **kwargs):
            signal.raise_signal(signal.SIGTERM)  # its handler runs here, mid-start
            real_init(self, *args, **kwargs)

        worker_module.Worker.__init__ = interrupted_init
        tel.start()
        print("survived the signal")
        """,
    )
    assert done.returncode == -signal.SIGTERM, done.stdout + done.stderr[-2000:]
    assert "survived" not in done.stdout
    assert intake.evaluations() == 50
