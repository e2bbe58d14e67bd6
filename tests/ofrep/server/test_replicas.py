"""Replicas share nothing but the flag files: they agree on every ETag and body, and a
file change reaches each of them (and each one's streams) on its own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from .conftest import RULES, static, write_flags
from .process import KILLSWITCH, ServerProcess, Stream, bulk, request, values, wait_until

Start = Callable[..., ServerProcess]


def contexts(n: int) -> list[dict[str, object]]:
    return [
        {
            "targetingKey": f"user-{i}",
            "email": f"u{i}@{'macrosoft.com' if i % 3 else 'x.org'}",
            "version": f"{i % 5}.{i % 3}.0",
            "user": {"name": f"n{i}"},
            "country": ["CA", "FR"][i % 2],
        }
        for i in range(n)
    ]


def test_two_replicas_give_identical_etags_and_bodies(tmp_path: Path, start_server: Start) -> None:
    # the same flags under another path: paths are not part of any fingerprint
    copy = tmp_path / "copy-of-rules.json"
    shutil.copyfile(RULES, copy)
    one, two = start_server([RULES]), start_server([copy])
    for context in contexts(40):
        for selector in (None, "rules"):
            a = one.bulk(context, selector=selector)
            b = two.bulk(context, selector=selector)
            assert a[0] == b[0] == 200
            assert a[1]["etag"] == b[1]["etag"]
            assert a[2] == b[2]
            # and each replica honours the other's ETag
            assert two.bulk(context, selector=selector, etag=a[1]["etag"])[0] == 304


def test_a_file_change_reaches_both_replicas_and_their_streams(
    tmp_path: Path, start_server: Start
) -> None:
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    one, two = start_server([flags]), start_server([flags])
    streams = [Stream(one.url), Stream(two.url)]
    for server in (one, two):
        wait_until(lambda s=server: s.status()["streams"]["open"] == 1, what="stream open")
    before = one.bulk({"targetingKey": "u"})[1]["etag"]
    write_flags(flags, {"color": static("blue")})
    wait_until(lambda: all(s.events for s in streams), what="both streams told")
    assert streams[0].events[0]["data"] == streams[1].events[0]["data"]
    for server in (one, two):
        status, _, body = server.bulk({"targetingKey": "u"}, etag=before)
        assert status == 200 and values(body) == {"color": "blue"}
    assert one.bulk({"targetingKey": "u"})[1]["etag"] == two.bulk({"targetingKey": "u"})[1]["etag"]
    for stream in streams:
        stream.close()


def test_gunicorn_workers_serve_and_follow_changes(tmp_path: Path) -> None:
    """Two aiohttp workers under gunicorn, each polling the file on its own."""
    flags = write_flags(tmp_path / "f.json", {"color": static("red")})
    app = f"flageval.ofrep.server:create_app(flags=[{str(flags)!r}], poll_interval_s=0.05)"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            "-k",
            "aiohttp.worker.GunicornWebWorker",
            "-w",
            "2",
            "-b",
            "127.0.0.1:0",
            "--no-control-socket",
            "--graceful-timeout",
            "10",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **KILLSWITCH},
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("Listening at" in x for x in lines) or proc.poll() is not None, 20)
        found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", "".join(lines))
        assert found, "".join(lines)
        url = found.group(1)
        wait_until(lambda: sum("Booting worker" in x for x in lines) == 2, 20, "two workers")
        answers = [bulk(url, {"targetingKey": f"u{i}"}) for i in range(20)]
        assert all(values(a[2]) == {"color": "red"} for a in answers)
        old = request(url, "GET", "/ofrep/server/status")[2]["flagSets"][0]["fingerprint"]
        write_flags(flags, {"color": static("blue")})
        # each connection lands on either worker: wait until two workers (by pid) say
        # they have the new flags, then every answer is the new one
        changed: set[int] = set()

        def both_changed() -> bool:
            status = request(url, "GET", "/ofrep/server/status")[2]
            if status["flagSets"][0]["fingerprint"] != old:
                changed.add(status["pid"])
            return len(changed) == 2

        wait_until(both_changed, 20.0, "both workers reading the change")
        answers = [bulk(url, {"targetingKey": f"u{i}"}) for i in range(20)]
        assert all(values(a[2]) == {"color": "blue"} for a in answers)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        reader.join(5)
