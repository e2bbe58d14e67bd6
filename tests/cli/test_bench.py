"""``python -m flageval bench``, run as a user runs it: a subprocess, outside the repository
(so neither benchmarks/ nor tests/ can be imported), with a tiny time budget."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VARIANTS = ["no hook", "empty hook", "hook", "wrapper"]
NUMBER = r"\s*(-?\d+\.\d+)\s*"
ROW = re.compile(r"^\| (no hook|empty hook|hook|wrapper)\s*\|" + rf"({NUMBER}\|)" * 6 + "$")

PROVIDERS = textwrap.dedent(
    """
    from openfeature.exception import ProviderFatalError
    from openfeature.flag_evaluation import FlagResolutionDetails
    from openfeature.provider import AbstractProvider, Metadata


    class SyncOnly(AbstractProvider):  # the async resolvers are AbstractProvider's defaults
        def get_metadata(self):
            return Metadata(name="mine")

        def _resolve(self, flag_key, default_value, evaluation_context=None):
            return FlagResolutionDetails(value="teal", variant="teal")

        resolve_boolean_details = resolve_string_details = _resolve
        resolve_integer_details = resolve_float_details = resolve_object_details = _resolve


    class CannotStart(SyncOnly):
        def initialize(self, evaluation_context):
            raise ProviderFatalError("no credentials")


    def make():
        return SyncOnly()


    def explode():
        raise RuntimeError("factory is broken")


    def not_a_provider():
        return 42


    def cannot_start():
        return CannotStart()
    """
)


def bench(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "userprov.py").write_text(PROVIDERS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "flageval", "bench", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tables(stdout: str) -> list[dict[str, list[float]]]:
    """Each table as {variant: its six figures}, in the order printed."""
    out: list[dict[str, list[float]]] = []
    for line in stdout.splitlines():
        if line.startswith("| variant"):
            out.append({})
        m = ROW.match(line)
        if m:
            out[-1][m.group(1)] = [float(x) for x in re.findall(r"-?\d+\.\d+", line)]
    return out


def test_default_run_prints_the_ratio_table(tmp_path: Path) -> None:
    done = bench(tmp_path, "--seconds", "1", "--attributes", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "provider InMemoryProvider (built in), flag 'bench-flag' (boolean)" in out
    assert "sync, 3 attributes:" in out and "async, 3 attributes:" in out
    found = tables(out)
    assert len(found) == 2
    for table in found:
        assert list(table) == VARIANTS
        for figures in table.values():
            assert all(x > 0 for x in figures)
        # Each variant against itself is exactly 1 (a median of per-round ratios).
        assert table["no hook"][1] == table["no hook"][4] == 1.0
        assert table["empty hook"][2] == table["empty hook"][5] == 1.0
    assert re.search(r"^added CPU per evaluation over no hook: empty hook [-+]\d", out, re.M)
    for way in ("hook", "wrapper"):
        assert re.search(rf"^{way} pipeline: [\d,]+ evaluations counted, dropped: none$", out, re.M)
    assert "note:" not in out
    assert "round" in done.stderr  # the progress line


def test_the_users_provider_flag_and_context_size(tmp_path: Path) -> None:
    done = bench(
        tmp_path,
        *("--provider", "userprov:make", "--flag", "color", "--type", "string"),
        *("--attributes", "25", "--seconds", "1", "--mode", "async"),
    )
    assert done.returncode == 0, done.stderr
    assert "provider userprov:make, flag 'color' (string)" in done.stdout
    assert "async, 25 attributes:" in done.stdout and "\nsync," not in done.stdout
    assert "note:" not in done.stdout
    assert [list(t) for t in tables(done.stdout)] == [VARIANTS]


def test_a_missing_flag_is_a_note_not_a_failure(tmp_path: Path) -> None:
    done = bench(tmp_path, "--flag", "no-such-flag", "--seconds", "0.5", "--mode", "sync")
    assert done.returncode == 0, done.stderr
    assert "note: the provider answered FLAG_NOT_FOUND for 'no-such-flag'" in done.stdout


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("no_such_module_here:make", "cannot import 'no_such_module_here'"),
        ("userprov:nothing", "'userprov' has no 'nothing'"),
        ("userprov", "--provider must be MODULE:FACTORY"),
        ("userprov:explode", "the provider factory failed: RuntimeError: factory is broken"),
        ("userprov:not_a_provider", "needs an OpenFeature provider"),
        ("userprov:cannot_start", "the provider did not start: no credentials"),
    ],
)
def test_a_provider_that_cannot_be_used_fails_the_run(tmp_path: Path, spec: str, said: str) -> None:
    done = bench(tmp_path, "--provider", spec, "--seconds", "0.5")
    assert done.returncode == 1
    assert said in done.stderr
    assert "| variant" not in done.stdout


def test_bad_arguments_and_settings(tmp_path: Path) -> None:
    assert bench(tmp_path, "--seconds", "0").returncode == 1
    assert bench(tmp_path, "--type", "decimal").returncode == 2  # argparse's own usage error
    # A bad environment value is the operator's: logged, its default used, as in an app.
    done = bench(
        tmp_path, "--seconds", "0.3", "--mode", "sync", env={"FLAGEVAL_QUEUE_SIZE": "lots"}
    )
    assert done.returncode == 0
    assert "FLAGEVAL_QUEUE_SIZE must be an integer > 0 and <= 10^15, got 'lots'" in done.stderr
    assert "Traceback" not in done.stderr
