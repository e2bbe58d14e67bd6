"""Every evaluation the server serves reaches a flageval pipeline configured from the
environment (a real intake on 127.0.0.1); a 304 is no evaluation; a graceful stop
delivers the counts; the killswitch turns counting off."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tests.intake import Intake

from .conftest import static, write_flags
from .process import ServerProcess, request

Start = Callable[..., ServerProcess]


def test_served_evaluations_are_counted_and_delivered_at_stop(
    tmp_path: Path, start_server: Start, intake: Intake
) -> None:
    flags = write_flags(
        tmp_path / "f.json",
        {
            "color": static("red", "r"),
            "size": static(3, "three"),
            "off": {**static(1), "state": "DISABLED"},
        },
    )
    env = {
        "DD_FLAGGING_EVALUATION_COUNTS_ENABLED": "true",
        "DD_TRACE_AGENT_URL": intake.url,
        "DD_SERVICE": "flag-server",
        "FLAGEVAL_FLUSH_INTERVAL_S": "600",  # nothing before the stop: the stop delivers
    }
    server = start_server([flags], env=env)
    user = {"targetingKey": "user-9", "plan": "pro"}
    status, headers, _ = server.bulk(user)  # 3 evaluated
    assert status == 200
    assert server.bulk(user, etag=headers["etag"])[0] == 304  # none
    assert server.bulk(user)[0] == 200  # 3, served from the cache
    assert server.bulk({"targetingKey": "user-10"})[0] == 200  # 3
    body = b'{"context": {"targetingKey": "user-9"}}'
    assert request(server.url, "POST", "/ofrep/v1/evaluate/flags/size", body)[0] == 200  # 1
    assert request(server.url, "POST", "/ofrep/v1/evaluate/flags/nope", body)[0] == 404  # 1
    assert intake.evaluations() == 0
    assert server.stop() == 0
    assert intake.evaluations() == 11
    counted: Counter[tuple[str, str | None, str | None]] = Counter()
    for row in intake.rows():
        key = (row["flag"]["key"], row.get("variant", {}).get("key"), row.get("targeting_key"))
        counted[key] += row["evaluation_count"]
    assert counted == {
        ("color", "r", "user-9"): 2,
        ("color", "r", "user-10"): 1,
        ("size", "three", "user-9"): 3,
        ("size", "three", "user-10"): 1,
        ("off", None, "user-9"): 2,
        ("off", None, "user-10"): 1,
        # an error row goes without consent: the key as its SHA-256 (wire format)
        ("nope", None, "sha256_" + hashlib.sha256(b"user-9").hexdigest()): 1,
    }
    (missing,) = [row for row in intake.rows() if row["flag"]["key"] == "nope"]
    assert missing["error"]["message"] == "FLAG_NOT_FOUND"


def test_the_killswitch_counts_nothing(tmp_path: Path, start_server: Start, intake: Intake) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    env = {"DD_FLAGGING_EVALUATION_COUNTS_ENABLED": "false", "DD_TRACE_AGENT_URL": intake.url}
    server = start_server([flags], env=env)
    for user in range(5):
        assert server.bulk({"targetingKey": f"u{user}"})[0] == 200
    assert server.stop() == 0
    assert intake.received == []
