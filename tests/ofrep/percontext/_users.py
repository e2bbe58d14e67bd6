"""The scriptable server's answers made to depend on the context: flag ``who`` is
``<targetingKey>|<plan>|<version>``, so every answer says whose it is."""

from __future__ import annotations

import json
from typing import Any

from openfeature.evaluation_context import EvaluationContext

from tests.ofrep.ofrep_server import OFREPTestServer


class Users:
    def __init__(self, server: OFREPTestServer) -> None:
        self.version = 1
        self.server = server
        server.flags_for_context = self._flags

    def _flags(self, ctx: dict[str, Any]) -> dict[str, dict[str, Any]]:
        who = f"{ctx.get('targetingKey', '')}|{ctx.get('plan', '')}|{self.version}"
        return {"who": {"key": "who", "value": who, "variant": "v", "reason": "TARGETING_MATCH"}}

    @staticmethod
    def context(user: str, plan: str = "free", **extra: Any) -> EvaluationContext:
        return EvaluationContext(user, {"plan": plan, **extra})

    def bodies_for(self, user: str) -> list[dict[str, Any]]:
        """The contexts of the bulk requests made for ``user``."""
        out = []
        for r in self.server.bulk_requests():
            ctx = json.loads(r.body or b"{}").get("context", {})
            if ctx.get("targetingKey") == user:
                out.append(ctx)
        return out
