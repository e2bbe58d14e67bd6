"""Process-wide life: exit, stop signals and fork, over every live pipeline.

Registering per object would keep every object ever built in both lists (neither can
be unregistered one by one); instead members sit in a weak registry and the hooks,
registered once, visit those still alive. Members are ``Telemetry`` pipelines (exit,
fork and stop signals) and OFREP providers (exit and fork).

Exit: :func:`ending`, the one place "the process is ending" is handled; each pipeline
takes it as the move to STOPPING (flageval._lifecycle).

Pool children: a worker process of a ``multiprocessing`` pool or ``ProcessPoolExecutor``
(fork, forkserver), and a Celery prefork child (billiard), end through ``os._exit``, so
``atexit`` never runs there. What does run is the pool's own last hook: multiprocessing
runs its finalizers (``multiprocessing.util.Finalize`` with an exit priority) when the
child's target returns, and Celery's prefork child sends ``worker_process_shutdown``.
When a worker starts in such a process, :func:`watch_pool_exit` has that hook call
:func:`ending`, looking only at modules the application already imported (importing
them ourselves would cost every ``import flageval``).

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
import sys
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

    def at_signal(self, final: bool) -> bool:
        """A stop signal came: flush, or (``final``: the process dies next) shut down.
        True when that shutdown waits for work the signal interrupted on this very
        thread (a start): the signal is then held until it is done."""

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
    flush. Registered with ``atexit``, and called by a pool child's last hook (see
    :func:`watch_pool_exit`). Idempotent: a member already shut down returns at once. A
    deadly stop signal that interrupts it is held until it is done (_on_signal)."""
    global _ending_on
    outer = _ending_on is None
    if outer:
        _ending_on = threading.get_ident()
    try:
        for member in members():
            try:
                member.at_exit()
            except BaseException:
                # Whatever one pipeline raised (even GeneratorExit or KeyboardInterrupt
                # from application code), the others still get their shutdown.
                log.exception("shutdown at exit failed")
        with _lock:
            waiting = list(_lingering)
        for thread, deadline in waiting:
            thread.join(deadline - time.monotonic())
    finally:
        if outer:
            _ending_on = None
            if _held is not None:
                _die(_held)


def _after_fork() -> None:
    global _lock, _lifespans, _ending_on, _held
    _lock = threading.RLock()  # the parent's may have been held by a thread the child lacks
    _lingering.clear()  # the parent's threads
    _lifespans = 0
    _ending_on = _held = None  # the parent's end
    for member in list(_live.values()):
        member.after_fork_in_child()


# -- stop signals --------------------------------------------------------------------------

_STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT") if hasattr(signal, n))
#: signal -> pid of the process that chained our handler for it.
_installed: dict[int, int] = {}
_in_handler = False
#: The thread running ending(), and a deadly signal held until it is done.
_ending_on: int | None = None
_held: int | None = None
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
    global _in_handler, _held
    kind = _kind(previous, signum)
    if kind == "dies" and _ending_on == threading.get_ident():
        # It interrupted the process's own end on this thread (a pool's terminate()
        # signals its workers while their finalizers deliver): dying now would lose
        # what that end is posting. It ends first, within its deadline, then dies of it.
        _held = signum
        return
    deferred = False
    # A second signal during our work (a second Ctrl+C) goes straight on.
    if not _in_handler and (kind == "dies" or (kind != "exits" and not _lifespans)):
        _in_handler = True
        try:
            for pipeline in pipelines():
                try:
                    deferred = pipeline.at_signal(kind == "dies") or deferred
                except BaseException:
                    log.exception("flush on signal %d failed", signum)
        finally:
            _in_handler = False
    if previous is signal.SIG_DFL:
        if deferred:
            # A shutdown waits for the start this thread is in the middle of: the
            # signal acts once that shutdown is done (release_held_signal).
            _held = signum
            return
        _die(signum)
    elif callable(previous):
        previous(signum, frame)


def release_held_signal() -> None:
    """A shutdown a deadly signal was held for is done: die of it now, unless the
    process's own end is still running (it dies of it when done)."""
    if _held is not None and _ending_on is None:
        _die(_held)


def _die(signum: int) -> None:
    """Die of ``signum`` as if no handler of ours had been there."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


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
    before the server installed its own), watch a pool child's exit, and warn once when
    counts made after a stop signal cannot be delivered."""
    global _warned
    install_signal_handlers()
    watch_pool_exit()
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


# -- pool children -------------------------------------------------------------------------

#: Our finalizer runs before multiprocessing's own (its queues' are 10 and below), while
#: everything the final flush needs is still there.
_EXIT_PRIORITY = 100
_watched_pid = 0  # the process whose pool hooks call ending()


class _Token:
    """What multiprocessing's after-fork registry keys our hook on (held for good)."""


_TOKEN = _Token()


def watch_pool_exit() -> None:
    """In a process a pool started, have the pool's own last hook call :func:`ending`:
    Celery's ``worker_process_shutdown`` (a prefork child, sent before its
    ``os._exit``) where Celery is imported, and a multiprocessing finalizer in a
    multiprocessing child (run when its target returns, before its ``os._exit``). Once
    per process; never imports either module."""
    global _watched_pid
    if _watched_pid == os.getpid():
        return
    _watched_pid = os.getpid()
    celery_signals = sys.modules.get("celery.signals")
    if celery_signals is not None:
        try:
            celery_signals.worker_process_shutdown.connect(
                _on_process_shutdown, weak=False, dispatch_uid="flageval.ending"
            )
        except Exception:  # an unexpected Celery: atexit and the signals still hold
            log.debug("could not connect to worker_process_shutdown", exc_info=True)
    mp = sys.modules.get("multiprocessing")
    util = sys.modules.get("multiprocessing.util")
    try:
        if mp is None or util is None or mp.parent_process() is None:
            return
        util.Finalize(None, ending, exitpriority=_EXIT_PRIORITY)
        # A child whose worker started before its bootstrap cleared the finalizers (an
        # evaluation while a spawned child imports the main module) registers again
        # once that is done: multiprocessing runs its after-fork hooks just after.
        util.register_after_fork(_TOKEN, _watch_again)
    except Exception:
        log.debug("could not register a multiprocessing finalizer", exc_info=True)


def _watch_again(_: object) -> None:
    global _watched_pid
    _watched_pid = 0
    watch_pool_exit()


def _on_process_shutdown(*args: Any, **kwargs: Any) -> None:
    ending()
