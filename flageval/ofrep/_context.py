"""The evaluation context the bulk fetches are made for. Loop only.

`CurrentContext` owns the context's request body (canonical: equal contexts give equal
bytes), its generation (one more at each switch, so an answer for an older context can
be told apart), the ETag that belongs to it (OFREP does not say whether an ETag covers
the context, so a switch drops it) and the ``set_context`` futures waiting for the first
answer. Whether a switch is accepted, and when a fetch goes out, are the coordinator's.

`encode_context` makes the body; a context it cannot encode (an attribute whose
``__str__`` raises, a cyclic list) raises `ContextEncodingError`, and the coordinator
then makes the context `unusable`: no request is made for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from openfeature.evaluation_context import EvaluationContext


class ContextEncodingError(ValueError):
    """The evaluation context cannot be sent. The message names the error's type only:
    the attribute values are the application's data."""


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return list(obj)
    # Anything the SDK's types do not cover reaches the server as its string form.
    return str(obj)


_json_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, order="sorted")


def encode_context(context: EvaluationContext) -> bytes:
    """The request body. Keys are sorted, so equal contexts give equal bytes: the body
    doubles as the canonical form that an ETag is tied to."""
    try:
        fields: dict[str, Any] = dict(context.attributes)
        if context.targeting_key is not None:
            fields["targetingKey"] = context.targeting_key
        return _json_encoder.encode({"context": fields})
    except Exception as exc:  # whatever an attribute's own methods raise
        raise ContextEncodingError(
            f"the evaluation context cannot be encoded ({type(exc).__name__})"
        ) from None


class CurrentContext:
    def __init__(self) -> None:
        self.body = b""
        self.usable = True  # False: the context could not be encoded; nothing is sent
        self.generation = 0
        self.etag: str | None = None
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []

    def switch(self, body: bytes) -> asyncio.Future[bool]:
        """Make ``body`` current; the future says whether its evaluation arrived. Futures
        of earlier switches resolve to False: they are superseded."""
        self.body = body
        self.usable = True
        self.generation += 1
        self.etag = None
        self.settle(None, False)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.generation, future))
        return future

    def unusable(self) -> None:
        """The application's new context cannot be encoded: answers for the previous one
        are discarded from now on (a new generation) and no request is made."""
        self.usable = False
        self.body = b""
        self.generation += 1
        self.etag = None
        self.settle(None, False)

    def settle(self, generation: int | None, result: bool) -> None:
        """Resolve the futures of ``generation`` (of every one when None) to ``result``."""
        keep: list[tuple[int, asyncio.Future[bool]]] = []
        for gen, future in self._waiters:
            if generation is None or gen == generation:
                if not future.done():
                    future.set_result(result)
            else:
                keep.append((gen, future))
        self._waiters = keep
