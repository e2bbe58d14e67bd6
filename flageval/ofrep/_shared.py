"""What resolving threads and the provider's loop share, without a lock.

The loop replaces ``entries`` with a new dict in one assignment and a resolve reads it
as it is; ``last_used`` is written by resolves and read by the loop; ``idle`` and
``wake_requested`` are the inactivity handshake (`_inactivity`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ._resolve import FlagEntry


class Shared:
    __slots__ = ("entries", "idle", "last_used", "wake_requested")

    def __init__(self) -> None:
        self.entries: Mapping[str, FlagEntry] | None = None
        self.idle = False
        self.wake_requested = False
        self.last_used = time.monotonic()
