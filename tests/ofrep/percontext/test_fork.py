"""A forked child serves the inherited per-context entries at once and fetches new
contexts on a loop of its own."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest
from openfeature.evaluation_context import EvaluationContext

from flageval.ofrep import OFREPProvider
from tests.ofrep.helpers import start_with_stream
from tests.ofrep.ofrep_server import OFREPTestServer
from tests.ofrep.test_fork import _read_line

from ._users import Users


def _child(provider: OFREPProvider, ann: EvaluationContext, report: int) -> None:
    result: dict[str, object] = {}
    try:
        # Every request is held by the server now: only memory can answer this.
        ann_value = provider.resolve_string_details("who", "", ann).value
        os.write(report, (json.dumps({"ann": ann_value}) + "\n").encode())
        bob = EvaluationContext("bob", {"plan": "free"})
        result["bob"] = provider.resolve_string_details("who", "", bob).value
        result["stats"] = provider.stats()
        provider.shutdown()
    except BaseException as exc:  # reported, never raised out of the child
        result["error"] = repr(exc)
    finally:
        try:
            os.write(report, (json.dumps(result) + "\n").encode())
        finally:
            os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_serves_inherited_contexts_and_fetches_new_ones_itself(
    server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    users = Users(server)
    provider, client = start_with_stream(server, make_provider, context_wait_s=5.0)
    ann = users.context("ann")
    assert client.get_string_value("who", "", ann) == "ann|free|1"
    server.hold_fetches()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        _child(provider, ann, write_fd)
    os.close(write_fd)
    try:
        first = _read_line(read_fd, 10)
        server.release_fetches()
        report = _read_line(read_fd, 10)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "error" not in report, report
    assert first == {"ann": "ann|free|1"}  # the inherited entry, at once
    assert report["bob"] == "bob|free|1"  # fetched on the child's own loop
    assert users.bodies_for("bob") == [{"targetingKey": "bob", "plan": "free"}]
