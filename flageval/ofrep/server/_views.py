"""Flag sets as clients select them, and their configuration fingerprints.

A *view* is what one ``Flagd-Selector`` sees: every flag (no selector), or the flags
whose ``flagSetId`` (the flag's metadata, else its file's) is the one selected. Files
later on the command line win a key they share with an earlier one (within a flag set
for a selector, among all flags without one, as flagd keys flags by set and key). A view's
fingerprint is a SHA-256 over its id, its metadata and the canonical form of each of its
flags in key order: it depends on what the flags say, never on paths, file order of
unrelated flags, times or the process, so replicas with the same files agree.

A :class:`Config` is immutable: a reload builds a new one and swaps it in with one
assignment, so a request sees one configuration from start to end.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from openfeature.contrib.tools.flagd.core import FlagdCore

from ._flagfile import FlagDef, Source

_canonical = msgspec.json.Encoder(order="sorted")
#: The longest flagSetId a selector may name (ids past it cannot exist in any view).
MAX_SET_ID_CHARS = 256


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One flag of a view: its definition and the evaluator of the file it came from."""

    flag: FlagDef
    core: FlagdCore


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    set_id: str | None  # None: every flag
    entries: tuple[Entry, ...]  # in key order
    index: Mapping[str, Entry]
    fingerprint: str  # hex; the SSE "etag" and what flagConfigEtag is compared with
    last_modified_s: int  # the newest mtime of the files it draws on (0: none)
    metadata: Mapping[str, Any]  # the flag-set metadata of its answers
    volatile: bool  # a flag reads $flagd.timestamp: answers are never reused


def _fingerprint(set_id: str | None, metadata: Mapping[str, Any], entries: Sequence[Entry]) -> str:
    h = hashlib.sha256()
    # Compact JSON escapes newlines, so "\n" separates the parts unambiguously.
    h.update(_canonical.encode([set_id, metadata]))
    for entry in entries:
        h.update(b"\n")
        h.update(entry.flag.canonical)
    return h.hexdigest()


def _view(set_id: str | None, picked: Mapping[str, Entry], sources: Sequence[Source]) -> View:
    entries = tuple(picked[k] for k in sorted(picked))
    drawn = [s for s in sources if any(e.core is s.core for e in entries)]
    metadata: dict[str, Any] = {}
    for source in drawn:
        metadata.update(source.metadata)
    if set_id is not None:
        metadata["flagSetId"] = set_id
    return View(
        set_id=set_id,
        entries=entries,
        index=dict(picked),
        fingerprint=_fingerprint(set_id, metadata, entries),
        last_modified_s=max((s.mtime_s for s in drawn), default=0),
        metadata=metadata,
        volatile=any(e.flag.volatile for e in entries),
    )


def empty_view(set_id: str | None) -> View:
    """The view of a flag set no file defines (yet): no flags, its own fingerprint."""
    metadata: dict[str, Any] = {} if set_id is None else {"flagSetId": set_id}
    return View(set_id, (), {}, _fingerprint(set_id, metadata, ()), 0, metadata, False)


class Config:
    """Every view of one reading of the files (immutable once built)."""

    __slots__ = ("duplicates", "sources", "views")

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = tuple(sources)
        everything: dict[str, Entry] = {}
        by_set: dict[str, dict[str, Entry]] = {}
        #: keys defined by more than one file (the later file's definition is served)
        self.duplicates: set[str] = set()
        for source in self.sources:
            for key, flag in source.flags.items():
                if key in everything:
                    self.duplicates.add(key)
                entry = Entry(flag, source.core)
                everything[key] = entry
                if flag.set_id is not None:
                    by_set.setdefault(flag.set_id, {})[key] = entry
        self.views: dict[str | None, View] = {None: _view(None, everything, self.sources)}
        for set_id, picked in by_set.items():
            if picked:
                self.views[set_id] = _view(set_id, picked, self.sources)

    def view(self, set_id: str | None) -> View:
        found = self.views.get(set_id)
        return found if found is not None else empty_view(set_id)

    def fingerprints(self) -> dict[str | None, str]:
        return {k: v.fingerprint for k, v in self.views.items()}
