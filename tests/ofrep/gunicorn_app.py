"""A WSGI app for the gunicorn --preload test: the provider is built and initialized in
the master (``OFREP_ENDPOINT`` points at the test's server); workers fork from it.

GET / answers ``{"pid": ..., "value": ..., "restarts": ...}`` for the flag ``f``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

from openfeature import api

from flageval.ofrep import OFREPProvider

provider = OFREPProvider(cache_mode="disabled", reconnect_min_s=0.05, reconnect_max_s=0.2)
api.set_provider_and_wait(provider)
client = api.get_client()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = json.dumps(
        {
            "pid": os.getpid(),
            "value": client.get_integer_value("f", -1),
            "restarts": provider.stats()["fork_restarts"],
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
