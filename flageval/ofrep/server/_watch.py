"""The flag files, polled: a changed file is re-read, and the new configuration swapped in.

Every ``poll_interval_s`` each file is stat'ed (size, mtime, inode); one that changed is
read and parsed off the event loop, and every tenth poll each file is read and hashed
anyway (a rewrite within the clock's granularity keeps size and mtime). A read that
raced a writer (the stat before and after differ) is retried at the next poll. The new
:class:`Config` replaces the old one in one assignment, and the flag sets whose
fingerprint changed are announced. A file that cannot be read or parsed keeps the flags
it last gave, and is said once in the log per distinct failure; a file removed keeps
them too (empty its ``flags`` to remove them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ._flagfile import MAX_FILE_BYTES, FlagFileError, Source, digest_of, parse
from ._views import Config

log = logging.getLogger("flageval.ofrep.server")

#: Every this many polls, files are read and hashed whatever their stat says.
FULL_READ_EVERY = 10
#: A forced check (a client holds a newer flagConfigEtag) runs at most this often.
FORCED_CHECK_MIN_INTERVAL_S = 0.05

Stat = tuple[int, int, int, int]  # (mtime_ns, size, inode, device)
Changed = Callable[[Config, set[str | None]], None]


class _File:
    __slots__ = ("failure", "path", "source", "stat")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stat: Stat | None = None
        self.source: Source | None = None
        self.failure: str | None = None  # the failure last logged (said once)


def _stat(path: Path) -> Stat:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class FlagFiles:
    """The current :class:`Config` of a list of files, kept fresh by :meth:`run`."""

    def __init__(self, paths: Sequence[Path], poll_interval_s: float, on_change: Changed) -> None:
        self._files = [_File(Path(p)) for p in paths]
        self._interval_s = poll_interval_s
        self._on_change = on_change
        self._polls = 0
        self._scan: asyncio.Task[None] | None = None
        self._last_forced = 0.0
        self.reloads = 0
        self.failures = 0
        self.last_change_s = 0.0  # wall time of the last swap that changed a flag set
        self._duplicates: frozenset[str] = frozenset()
        self._read(full=True)
        self.config = Config([f.source for f in self._files if f.source is not None])
        self._say_duplicates(self.config)

    # -- reading (runs in a worker thread, but for the first read) ----------------------
    def _read(self, full: bool) -> bool:
        """Re-read what changed; True when any file gave new flags."""
        changed = False
        for f in self._files:
            try:
                before = _stat(f.path)
                if before == f.stat and not full:
                    continue
                if before[1] > MAX_FILE_BYTES:  # refused unread
                    raise FlagFileError(f"{f.path}: larger than {MAX_FILE_BYTES} bytes")
                raw = f.path.read_bytes()
                if _stat(f.path) != before:
                    continue  # written while read: next poll
                if f.source is not None and digest_of(raw) == f.source.digest:
                    f.stat = before  # touched, or back to what it last gave: nothing new
                    self._recovered(f)
                    continue
                source = parse(f.path, raw, before[0] // 1_000_000_000)
            except OSError as err:
                self._fail(f, f"{f.path}: cannot read ({err.strerror or type(err).__name__})")
                continue
            except FlagFileError as err:
                f.stat = before
                self._fail(f, str(err))
                continue
            f.stat, f.source = before, source
            self._recovered(f)
            changed = True
        return changed

    @staticmethod
    def _recovered(f: _File) -> None:
        if f.failure is not None:
            log.info("%s: flags loaded again", f.path)
            f.failure = None

    def _fail(self, f: _File, message: str) -> None:
        self.failures += 1
        if message != f.failure:
            f.failure = message
            kept = "keeping its previous flags" if f.source is not None else "no flags from it"
            log.error("%s; %s", message, kept)

    def _say_duplicates(self, config: Config) -> None:
        dup = frozenset(config.duplicates)
        if dup and dup != self._duplicates:
            shown = ", ".join(sorted(dup)[:10]) + (" ..." if len(dup) > 10 else "")
            log.warning("flag keys in more than one file (the later file's served): %s", shown)
        self._duplicates = dup

    # -- swapping (on the loop) -----------------------------------------------------------
    def _swap(self) -> None:
        old = self.config
        new = Config([f.source for f in self._files if f.source is not None])
        before, after = old.fingerprints(), new.fingerprints()
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        self.config = new  # one assignment: a request sees one configuration throughout
        self.reloads += 1
        self._say_duplicates(new)
        if changed:
            self.last_change_s = time.time()
            log.info("flags reloaded; flag sets changed: %d", len(changed))
            self._on_change(new, changed)

    async def _check(self, full: bool) -> None:
        if await asyncio.to_thread(self._read, full):
            self._swap()

    async def check_now(self, timeout_s: float = 1.0) -> None:
        """Check the files now (a client says the configuration changed); one check at a
        time, at most one every 50 ms; waits for it at most ``timeout_s``."""
        scan = self._scan
        if scan is None or scan.done():
            now = time.monotonic()
            if now - self._last_forced < FORCED_CHECK_MIN_INTERVAL_S:
                return
            self._last_forced = now
            scan = self._scan = asyncio.ensure_future(self._guarded(full=False))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(scan), timeout_s)

    async def _guarded(self, full: bool) -> None:
        try:
            await self._check(full)
        except Exception:  # a bug, not a file's fault: logged, and the next poll goes on
            log.exception("checking the flag files failed")

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            self._polls += 1
            scan = self._scan
            if scan is not None and not scan.done():
                await asyncio.shield(scan)  # a forced check is running: that one counts
                continue
            self._scan = asyncio.ensure_future(self._guarded(self._polls % FULL_READ_EVERY == 0))
            await asyncio.shield(self._scan)
