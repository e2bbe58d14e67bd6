"""``python -m flageval demo``: what it prints is what the intake received, and it adds up.

Every expected count is worked out from the demo's loops as its docstring states them
(thread ``w``'s step ``n`` is evaluation ``i = w * per_thread + n`` for user ``i % 40``;
async task ``t``'s step ``n`` is user ``(t + n) % 40``), never read from the demo's code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flageval import Stats
from flageval._cli.demo import Outcome, balanced

ROOT = Path(__file__).resolve().parents[2]
THREADS, PER_THREAD, TASKS, PER_TASK = 3, 500, 7, 20
USERS = 40
CAP = 100  # the demo's max_buckets_per_flag


def _expected() -> dict[str, object]:
    sync_users = [i % USERS for i in range(THREADS * PER_THREAD)]
    enterprise = [u for u in sync_users if u % 3 == 2]  # plans (free, pro, enterprise)
    upsell = THREADS * len(range(0, PER_THREAD, 4))
    retired_users = {
        (w * PER_THREAD + n) % USERS for w in range(THREADS) for n in range(0, PER_THREAD, 50)
    }
    dark = [(t + n) % USERS for t in range(TASKS) for n in range(PER_TASK)]
    groups = {
        ("new-checkout", "on", "rollout-20pct"): (
            len({u for u in sync_users if u % 5 == 0}),
            sum(1 for u in sync_users if u % 5 == 0),
        ),
        ("new-checkout", "off", "control"): (
            len({u for u in sync_users if u % 5}),
            sum(1 for u in sync_users if u % 5),
        ),
        ("search-backend", "v2", "enterprise-first"): (len(set(enterprise)), len(enterprise)),
        ("search-backend", "(code default)", "-"): (
            len({u for u in sync_users if u % 3 != 2}),
            len(sync_users) - len(enterprise),
        ),
        # Each upsell evaluation carries its own request id: CAP full rows of one, then
        # one degraded row for the rest.
        ("checkout-upsell", "show", "upsell-test"): (CAP + 1, upsell),
        ("retired-flag", "(code default)", "-"): (
            len(retired_users),
            THREADS * len(range(0, PER_THREAD, 50)),
        ),
        ("dark-mode", "enabled", "everyone"): (len(set(dark)), len(dark)),
    }
    return {
        "groups": groups,
        "total": sum(n for _, n in groups.values()),
        "rows": sum(r for r, _ in groups.values()),
        "degraded": upsell - CAP,
        "user5_checkout": sync_users.count(5),
        "user5_dark": dark.count(5),
    }


def _run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flageval",
            "demo",
            "--threads",
            str(THREADS),
            "--per-thread",
            str(PER_THREAD),
            "--tasks",
            str(TASKS),
            "--per-task",
            str(PER_TASK),
        ],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _shown_row(out: str, title_start: str) -> dict[str, object]:
    """The JSON row printed under the section title starting ``title_start``."""
    block = out.split(title_start, 1)[1].split("\n\n", 1)[0]
    text = block[block.index("\n    {") :]
    return json.loads(text)  # type: ignore[no-any-return]


# A hostile environment must change nothing: the demo gives every setting itself, so
# no variable can switch it off, hash its rows or send it elsewhere.
HOSTILE = {
    "DD_FLAGGING_EVALUATION_COUNTS_ENABLED": "false",
    "FLAGEVAL_FULL_DATA_DEFAULT": "false",
    "FLAGEVAL_INTAKE_URL": "http://127.0.0.1:1/nowhere",
    "FLAGEVAL_AGENTLESS": "true",
    "DD_API_KEY": "not-a-key",
    "FLAGEVAL_MAX_BUCKETS_PER_FLAG": "1",
}


@pytest.mark.parametrize("extra_env", [{}, HOSTILE], ids=["plain", "hostile-env"])
def test_demo_shows_what_the_intake_received_and_the_books_balance(
    extra_env: dict[str, str],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env.update(extra_env)
    done = _run_demo(env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    want = _expected()

    # One line on each section (prose is wrapped: compare with spaces collapsed), and
    # no "body(ies)".
    flat = " ".join(out.split())
    for said in (
        "What the intake received: 1 POST to /evp_proxy/v2/api/v2/flagevaluation",
        "A row is one bucket",
        "Three of those rows, exactly as sent:",
        "All rows, summed per flag, variant and allocation.",
        "(code default): the provider gave no variant",
        "runtime_default_used: true",
        "The pipeline's own counters",
        "Next, send to a real Datadog agent",
    ):
        assert said in flat, said
    assert "(ies)" not in out

    full = _shown_row(out, "1. Full data")
    assert full["targeting_key"] == "user-5"
    assert full["flag"] == {"key": "new-checkout"} and full["variant"] == {"key": "on"}
    # User 5: plan enterprise (5 % 3), country FR (5 % 4), app 3.2.0 on android, beta.
    # The 300-character user_agent is skipped; the nested app is flattened.
    assert full["context"] == {
        "evaluation": {
            "app.platform": "android",
            "app.version": "3.2.0",
            "beta": True,
            "country": "FR",
            "plan": "enterprise",
        }
    }
    assert full["evaluation_count"] == want["user5_checkout"]

    hashed = _shown_row(out, "2. No consent")
    assert hashed["targeting_key"] == "sha256_" + hashlib.sha256(b"user-5").hexdigest()
    assert hashed["flag"] == {"key": "dark-mode"} and "context" not in hashed
    assert hashed["evaluation_count"] == want["user5_dark"]

    degraded = _shown_row(out, "3. Degraded")
    assert degraded["flag"] == {"key": "checkout-upsell"}
    assert "targeting_key" not in degraded and "context" not in degraded
    assert degraded["evaluation_count"] == want["degraded"]

    table: dict[tuple[str, str, str], tuple[int, int]] = {}
    for line in out.split("  ----", 1)[1].split("\n\n", 1)[0].splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        table[(cells[0], cells[1], cells[2])] = (int(cells[3]), int(cells[4]))
    assert table == want["groups"]
    # An error whose details carry no flag metadata is sent protected: its code, not
    # the SDK's message (docs/wire-format.md, consent).
    assert "  FLAG_NOT_FOUND\n" in out and "not found" not in out

    total, rows = want["total"], want["rows"]
    assert re.search(rf"evaluations +{total} seen by the hook", out)
    assert re.search(rf"posted +{total} in {rows} rows, 1 POST\n", out)
    assert re.search(r"pending +0\n", out) and re.search(r"dropped +none\n", out)
    assert re.search(rf"degraded +cardinality_cap={want['degraded']} ", out)
    assert "conservation  holds" in out

    for hint in (
        "DD_TRACE_AGENT_URL=",
        "DD_AGENT_HOST=",
        "DD_SERVICE=",
        "api.add_hooks([FlagEvalHook()])",
    ):
        assert hint in flat, hint
    # Its last line says where README.md and docs/ are: here, the source tree it runs
    # from (tests/test_packaging.py: the installed copy, from the wheel).
    where = Path(out.rstrip("\n").splitlines()[-1].strip())
    assert where == ROOT
    assert (where / "README.md").is_file() and (where / "docs" / "settings.md").is_file()


def test_unbalanced_books_fail_the_demo() -> None:
    body = json.dumps({"context": {"service": "s"}, "flagEvaluations": [{"evaluation_count": 3}]})
    ok = Stats(3, 3, 1, 1, 0, {}, {}, 1, 1, 0)
    assert balanced(Outcome([body.encode()], ok, 0.0, 1, 0))
    # Something pending, a counter that does not add up, or an intake that holds other
    # counts than the pipeline says it posted: each fails.
    assert not balanced(Outcome([body.encode()], Stats(4, 3, 1, 1, 1, {}, {}, 1, 1, 0), 0.0, 1, 0))
    assert not balanced(Outcome([body.encode()], Stats(4, 3, 1, 1, 0, {}, {}, 1, 1, 0), 0.0, 1, 0))
    assert not balanced(Outcome([], ok, 0.0, 1, 0))
