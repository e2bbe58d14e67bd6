"""The evaluation context the bulk fetches are made for. Loop only.

`CurrentContext` owns the context's request body (canonical: equal contexts give equal
bytes), its generation (one more at each switch, so an answer for an older context can
be told apart), the ETag that belongs to it (OFREP does not say whether an ETag covers
the context, so a switch drops it) and the ``set_context`` futures waiting for the first
answer. Whether a switch is accepted, and when a fetch goes out, are the coordinator's.
"""

from __future__ import annotations

import asyncio


class CurrentContext:
    def __init__(self) -> None:
        self.body = b""
        self.generation = 0
        self.etag: str | None = None
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []

    def switch(self, body: bytes) -> asyncio.Future[bool]:
        """Make ``body`` current; the future says whether its evaluation arrived. Futures
        of earlier switches resolve to False: they are superseded."""
        self.body = body
        self.generation += 1
        self.etag = None
        self.settle(None, False)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.generation, future))
        return future

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
