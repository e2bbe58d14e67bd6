"""A plain WSGI app for gunicorn's sync workers, the hook added at import as README says.

``/eval_sync`` evaluates ``n`` times.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from flageval import FlagEvalHook

api.set_provider(InMemoryProvider({"f": InMemoryFlag("on", {"on": True, "off": False})}))
api.add_hooks([FlagEvalHook()])
client = api.get_client()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    path = environ.get("PATH_INFO", "")
    if path == "/eval_sync":
        for i in range(int(query["n"])):
            client.get_boolean_value("f", False, EvaluationContext(f"{query['tag']}-{i}"))
    elif path != "/health":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"pid": os.getpid()}).encode()]
