"""Process-wide life: one atexit hook and one at-fork hook over every live member.

Registering per object would keep every object ever built in both lists (neither can
be unregistered one by one); instead members sit in a weak registry and the two hooks,
registered once, visit those still alive. Members are ``Telemetry`` pipelines.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import weakref
from typing import Protocol

log = logging.getLogger("flageval")


class Member(Protocol):
    def at_exit(self) -> None:
        """Flush and close at interpreter exit (called in registration order reversed)."""

    def after_fork_in_child(self) -> None:
        """In a forked child: drop what belongs to the parent."""


_live: weakref.WeakValueDictionary[int, Member] = weakref.WeakValueDictionary()
_next_id = itertools.count()
_lock = threading.Lock()
_registered = False


def track(member: Member) -> None:
    """Visit ``member`` at exit and after fork for as long as it is alive."""
    global _registered
    with _lock:
        _live[next(_next_id)] = member
        if not _registered:
            _registered = True
            atexit.register(_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)


def _at_exit() -> None:
    for key in sorted(_live.keys(), reverse=True):  # newest first
        member = _live.get(key)
        if member is not None:
            try:
                member.at_exit()
            except Exception:
                log.exception("shutdown at exit failed")


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by a thread the child lacks
    for member in list(_live.values()):
        member.after_fork_in_child()
