"""What is served, and where it came from.

`Shared` is what resolving threads and the provider's loop share, without a lock: the
loop replaces ``entries`` with a new dict in one assignment and a resolve reads it as
it is; ``anchor`` is the same dict paired with the request body it answers (one
assignment too), for per-context resolves of that very context; ``last_used`` is
written by resolves and read by the loop; ``idle`` and ``wake_requested`` are the
inactivity handshake (`_inactivity`).

`Snapshot` (loop only) owns the raw items of the evaluation being served (for change
detection), the stream specs that came with it, and whether it is the persisted entry
not yet confirmed by the server (ADR-0009: reason CACHED). It publishes the resolvable
entries through ``Shared.entries``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ._bulk import Fetched, StreamSpec
from ._context import CurrentContext
from ._resolve import ContextError, FlagEntry, entry_from_item

#: The provider's own context's answer: the request body it answers, and its entries.
Anchor = tuple[bytes, Mapping[str, FlagEntry]] | None


class Shared:
    __slots__ = ("anchor", "entries", "idle", "last_used", "wake_requested")

    def __init__(self) -> None:
        self.entries: Mapping[str, FlagEntry] | None = None
        self.anchor: Anchor = None
        self.idle = False
        self.wake_requested = False
        self.last_used = time.monotonic()


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return sorted(keys)


class Snapshot:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self.items: dict[str, Any] = {}
        self.specs: tuple[StreamSpec, ...] = ()
        self.from_cache = False
        self.context: CurrentContext | None = None  # whose body the entries answer
        self.exact = False  # the persisted entry was written for this very context

    def _publish(self, entries: Mapping[str, FlagEntry], exact: bool = True) -> None:
        self._shared.entries = entries
        context = self.context
        body = context.body if context is not None and context.usable else None
        self._shared.anchor = (body, entries) if body is not None and exact else None

    @property
    def served(self) -> bool:
        """Whether evaluations (live or persisted) are being served."""
        entries = self._shared.entries
        return entries is not None and not isinstance(entries, ContextError)

    def replace(self, fetched: Fetched) -> list[str]:
        """Serve a 200's evaluation. Returns the flags whose resolution changed: none for
        the first evaluation, every flag when it replaces the persisted entry (their
        reason, at least, is no longer CACHED)."""
        if self.from_cache:
            changed = sorted(self.items.keys() | fetched.items.keys())
        elif self.served:
            changed = changed_keys(self.items, fetched.items)
        else:
            changed = []
        self.items = fetched.items
        self.specs = fetched.streams
        self.from_cache = False
        self._publish(fetched.entries)
        return changed

    def load_cached(self, fetched: Fetched) -> None:
        """Serve the persisted entry (its entries carry reason CACHED)."""
        self.items = fetched.items
        self.specs = fetched.streams
        self.from_cache = True
        self._publish(fetched.entries, self.exact)

    def adopt(self, items: dict[str, Any], specs: tuple[StreamSpec, ...], from_cache: bool) -> None:
        """A forked child's: the parent's snapshot (its entries are already shared)."""
        self.items, self.specs, self.from_cache = items, specs, from_cache

    def confirm(self) -> list[str]:
        """A 304 for the persisted entry: the server's reasons replace CACHED; returns
        the flags whose resolution changed so (all of them; none when not cached)."""
        if not self.from_cache:
            return []
        self.from_cache = False
        self._publish({key: entry_from_item(item) for key, item in self.items.items()})
        return sorted(self.items)

    def unusable(self, message: str) -> None:
        """The context cannot be encoded: every flag resolves to INVALID_CONTEXT."""
        self.items = {}
        self.from_cache = False
        self._shared.entries = ContextError(message)
        self._shared.anchor = None
