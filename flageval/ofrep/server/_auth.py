"""Optional authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

No credential: 401 (with ``WWW-Authenticate: Bearer``); a credential that is no
configured key: 403. Keys are compared as SHA-256 digests with ``hmac.compare_digest``,
against every key each time (no early exit): neither the time nor the length of the
comparison depends on how much of a key was right. Keys are never logged.

Event streams are opened from a URL alone (a browser's ``EventSource`` sends no
headers), so the ``requestUri`` a 200 advertises carries a ``token``: an HMAC of the
channel under a secret derived from all configured keys. Every replica with the same
keys computes the same token, it opens that channel's stream only, and it changes
whenever the keys do. A stream request with a valid credential header needs no token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from aiohttp import web

_UNAUTHORIZED = '{"errorCode": "UNAUTHORIZED", "errorDetails": "credentials required"}'
_FORBIDDEN = '{"errorCode": "FORBIDDEN", "errorDetails": "credentials not accepted"}'


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class Auth:
    __slots__ = ("_digests", "_secret")

    def __init__(self, keys: Sequence[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys)
        joined = b"".join(sorted(self._digests))
        self._secret = hashlib.sha256(b"flageval-ofrep-stream-token\n" + joined).digest()

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def _valid(self, presented: str) -> bool:
        digest = _digest(presented)
        ok = False
        for known in self._digests:
            ok |= hmac.compare_digest(digest, known)
        return ok

    def _presented(self, request: web.Request) -> str | None:
        api_key = request.headers.get("X-API-Key")
        if api_key is not None:
            return api_key.strip()
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        # An Authorization of another scheme is a credential that is not ours: 403.
        return token.strip() if scheme.lower() == "bearer" else "\0"

    def check(self, request: web.Request, set_id: str | None = None, stream: bool = False) -> None:
        """Raise 401/403 unless the request may go on (always, when no key is set)."""
        if not self._digests:
            return
        presented = self._presented(request)
        if presented is not None and self._valid(presented):
            return
        if stream and presented is None:
            token = request.query.get("token")
            if token is not None and hmac.compare_digest(
                token.encode("utf-8", "surrogatepass"), self.token(set_id).encode()
            ):
                return
        if presented is None and (not stream or "token" not in request.query):
            raise web.HTTPUnauthorized(
                text=_UNAUTHORIZED,
                content_type="application/json",
                headers={"WWW-Authenticate": "Bearer"},
            )
        raise web.HTTPForbidden(text=_FORBIDDEN, content_type="application/json")

    def token(self, set_id: str | None) -> str:
        """The stream token of a channel (empty when no key is set)."""
        if not self._digests:
            return ""
        channel = b"\x00" if set_id is None else b"\x01" + set_id.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, channel, hashlib.sha256).hexdigest()[:32]
