"""Review: configured headers (credentials) never reach another origin, bulk included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import GeneralError

from flageval.ofrep import OFREPProvider

from .ofrep_server import BULK_PATH, OFREPTestServer, Scripted


def test_bulk_redirect_to_another_origin_does_not_carry_credentials(
    server: OFREPTestServer,
    other_server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    other_server.set_flag("f", True, "on")
    # 307 keeps the method and body: the POST would be replayed at the other origin.
    server.script.append(Scripted(307, headers={"Location": other_server.url + BULK_PATH}))
    provider = make_provider(
        server.url,
        headers={"X-API-Key": "secret-key", "Authorization": "Bearer secret-token"},
        change_detection="none",
    )
    with pytest.raises(GeneralError):  # the redirect is not followed: a failed fetch
        provider.initialize(EvaluationContext("user-1"))
    assert provider.stats()["fetch_status_other"] == 1
    assert other_server.all_requests() == []
