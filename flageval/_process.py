"""Process-wide life: exit, stop signals and fork, over every live pipeline.

Registering per object would keep every object ever built in both lists (neither can
be unregistered one by one); instead members sit in a weak registry and the hooks,
registered once, visit those still alive. Members are ``Telemetry`` pipelines (exit,
fork and stop signals) and OFREP providers (exit and fork).

Exit: :func:`ending`, the one place "the process is ending" is handled; each pipeline
takes it as the move to STOPPING (flageval._lifecycle).

Stop signals: ``atexit`` runs only when the interpreter ends normally, and a SIGTERM
left to its default action ends the process at once. So, as dd-trace-py does
(``register_on_exit_signal``), SIGTERM and SIGINT get a handler of ours chained in
front of the one in place, from the main thread, when a pipeline is built (in a
server: while the application module is imported) or its worker starts. What it does
depends on the handler it replaced:

* the default action: shut every pipeline down (deliver), then die of the signal as
  before. This is also how uvicorn ends when it imported the application before
  taking the signals (one process, and gunicorn's uvicorn workers): after its graceful
  shutdown it restores the handler it found, ours, and re-raises the signal into it;
* ``default_int_handler`` (left in place: ``asyncio.run`` looks for it), gunicorn's
  worker handlers, uvicorn's SIGINT: never chained; they end through ``sys.exit`` or
  KeyboardInterrupt, so through ``atexit``;
* uvicorn's SIGTERM handler (``--workers``/``--reload`` children import the app after
  taking the signals), or any other: flush what was counted, then call it. Under
  uvicorn that is the last code that runs (it re-raises into the default action), so
  evaluations made afterwards, by requests still in flight, are lost unless the app is
  wrapped in ``flageval.asgi.FlagEvalMiddleware`` (it shuts down at the lifespan's
  end, after uvicorn has waited for those requests); a warning says so once, when the
  first worker starts.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("flageval")


class Member(Protocol):
    def at_exit(self) -> None:
        """Flush and close at interpreter exit (called in registration order reversed)."""

    def after_fork_in_child(self) -> None:
        """In a forked child: drop what belongs to the parent."""


class Pipeline(Member, Protocol):
    """A member holding counts to deliver: visited on stop signals and lifespan ends too."""

    def at_signal(self, final: bool) -> None:
        """A stop signal came: flush, or (``final``: the process dies next) shut down."""

    async def shutdown_async(self, timeout_s: float | None = None) -> None:
        """Shut down without blocking the running loop (the ASGI lifespan's end)."""


class Lingering(Protocol):
    """A dropped pipeline's thread, finishing its final flush by itself."""

    @property
    def alive(self) -> bool: ...

    def join(self, timeout_s: float) -> bool: ...


_live: weakref.WeakValueDictionary[int, Member] = weakref.WeakValueDictionary()
_pipelines: weakref.WeakValueDictionary[int, Pipeline] = weakref.WeakValueDictionary()
_next_id = itertools.count()
# Re-entrant: the collector may release a dropped pipeline (linger()) on a thread that
# holds it while it allocates.
_lock = threading.RLock()
_registered = False
_lingering: list[tuple[Lingering, float]] = []


def track(member: Member) -> None:
    """Visit ``member`` at exit and after fork while it is alive."""
    _track(member)


def track_pipeline(pipeline: Pipeline) -> None:
    """Visit ``pipeline`` at exit, after fork and on stop signals while it is alive."""
    key = _track(pipeline)
    with _lock:
        _pipelines[key] = pipeline
    install_signal_handlers()


def _track(member: Member) -> int:
    global _registered
    with _lock:
        key = next(_next_id)
        _live[key] = member
        if not _registered:
            _registered = True
            atexit.register(ending)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)
    return key


def members() -> list[Member]:
    """The live members, newest first."""
    found = (_live.get(key) for key in sorted(_live.keys(), reverse=True))
    return [m for m in found if m is not None]


def pipelines() -> list[Pipeline]:
    """The live pipelines, newest first."""
    found = (_pipelines.get(key) for key in sorted(_pipelines.keys(), reverse=True))
    return [p for p in found if p is not None]


def linger(thread: Lingering, deadline: float) -> None:
    """Have exit wait (until ``deadline``) for ``thread`` to end by itself."""
    with _lock:
        _lingering[:] = [(t, d) for t, d in _lingering if t.alive]
        _lingering.append((thread, deadline))


def ending() -> None:
    """The process is ending: shut every live member down, newest first, then wait (up
    to their deadlines) for dropped pipelines' threads still finishing their final
    flush. Registered with ``atexit``; a process that ends without it (a pool child
    that leaves through ``os._exit``) must call it from its own last hook (a
    ``multiprocessing`` finalizer, Celery's ``worker_process_shutdown``). Idempotent: a
    member already shut down returns at once."""
    for member in members():
        try:
            member.at_exit()
        except BaseException:
            # Whatever one pipeline raised (even GeneratorExit or KeyboardInterrupt from
            # application code), the others still get their shutdown.
            log.exception("shutdown at exit failed")
    with _lock:
        waiting = list(_lingering)
    for thread, deadline in waiting:
        thread.join(deadline - time.monotonic())


def _after_fork() -> None:
    global _lock, _lifespans
    _lock = threading.RLock()  # the parent's may have been held by a thread the child lacks
    _lingering.clear()  # the parent's threads
    _lifespans = 0
    for member in list(_live.values()):
        member.after_fork_in_child()


# -- stop signals --------------------------------------------------------------------------

_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT") if hasattr(signal, n))
#: signal -> pid of the process that chained our handler for it.
_installed: dict[int, int] = {}
_in_handler = False
_lifespans = 0  # ASGI lifespans running under flageval.asgi.FlagEvalMiddleware
_exposed = False  # uvicorn's handler is the last word: only a signal-time flush runs
_warned = False


class _Chained:
    """Our handler for one signal, in front of the one it replaced."""

    def __init__(self, previous: Any) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        _on_signal(signum, frame, self.previous)


def _kind(handler: Any, sig: int) -> str:
    if handler is signal.SIG_DFL:
        return "dies"
    if handler is signal.default_int_handler:
        return "exits"  # KeyboardInterrupt, then atexit
    owner = type(getattr(handler, "__self__", None)).__module__
    if owner.startswith("gunicorn."):
        return "exits"  # a worker's handle_exit/handle_quit: it ends via sys.exit
    if owner.startswith("uvicorn."):
        # It re-raises into the handler it found: for SIGINT, default_int_handler.
        return "uvicorn" if sig == signal.SIGTERM else "exits"
    return "other"


def _on_signal(signum: int, frame: FrameType | None, previous: Any) -> None:
    global _in_handler
    kind = _kind(previous, signum)
    # A second signal during our work (a second Ctrl+C) goes straight on.
    if not _in_handler and (kind == "dies" or (kind != "exits" and not _lifespans)):
        _in_handler = True
        try:
            for pipeline in pipelines():
                try:
                    pipeline.at_signal(kind == "dies")
                except BaseException:
                    log.exception("flush on signal %d failed", signum)
        finally:
            _in_handler = False
    if previous is signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
    elif callable(previous):
        previous(signum, frame)


def install_signal_handlers() -> None:
    """Chain our handler in front of SIGTERM's and SIGINT's (from the main thread; from
    another, only notice uvicorn). Idempotent. Never where the signal is ignored, nor
    over a handler Python did not install, nor over one that ends through atexit."""
    global _exposed
    main = threading.current_thread() is threading.main_thread()
    for sig in _STOP_SIGNALS:
        try:
            current = signal.getsignal(sig)
        except (ValueError, OSError):
            continue
        if isinstance(current, _Chained):
            _exposed = _exposed or _kind(current.previous, sig) == "uvicorn"
            continue
        kind = _kind(current, sig)
        if kind == "uvicorn" and _installed.get(sig) == os.getpid():
            continue  # uvicorn took ours in when it started, and restores it at the end
        _exposed = _exposed or kind == "uvicorn"
        if not main or kind == "exits" or current in (signal.SIG_IGN, None):
            continue
        try:
            signal.signal(sig, _Chained(current))
            _installed[sig] = os.getpid()
        except (ValueError, OSError, RuntimeError):  # pragma: no cover - embedded runtimes
            log.debug("could not chain a handler for signal %d", sig, exc_info=True)


def on_worker_start() -> None:
    """A worker starts: chain the handlers if not yet (the pipeline may have been built
    before the server installed its own), and warn once when counts made after a stop
    signal cannot be delivered."""
    global _warned
    install_signal_handlers()
    if _exposed and not _lifespans and not _warned:
        _warned = True
        log.warning(
            "running under uvicorn, which ends the process with SIGTERM's default "
            "action after its graceful shutdown, so atexit never runs: what was counted "
            "before the signal is flushed when it comes, but evaluations made after it (by "
            "requests still in flight) are lost. Wrap the application to deliver them "
            "too: from flageval.asgi import FlagEvalMiddleware; app = FlagEvalMiddleware(app)"
        )


def lifespan_started() -> None:
    global _lifespans
    _lifespans += 1


def lifespan_ended() -> None:
    global _lifespans
    _lifespans = max(0, _lifespans - 1)


async def shutdown_all_async() -> None:
    """Shut every live pipeline down without blocking the running loop, newest first;
    one's failure never stops another's."""
    for pipeline in pipelines():
        try:
            await pipeline.shutdown_async()
        except Exception:
            log.exception("shutdown failed")
