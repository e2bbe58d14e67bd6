"""A pipeline's life: one explicit phase, the transitions it may take, and who takes them.

``Lifecycle`` holds the current :class:`Phase` and takes only the transitions listed in
``TRANSITIONS``; any other is refused (``move`` returns False and nothing changes), so a
stopped pipeline cannot run again, a failed one cannot accept, a halted worker cannot
become stopped, and so on. The hand-off's ``accepting``, the one attribute the hot path
reads, is written by ``move`` only, from the phase.

    phase     accepts  worker               meaning
    DISABLED  no       never                the killswitch: nothing starts, nothing counts
    IDLE      no       not yet              built; the first evaluation (or start()) starts it
    QUEUEING  yes      not yet              autostart=False: evaluations queue (bounded)
                                            until start()
    RUNNING   yes      on its own thread
    STOPPING  no       final drain, flush   shutdown began: later evaluations are `closed`
    STOPPED   no       ended                every evaluation posted or counted
    HALTED    no       halted               shutdown's deadline came before the worker was
                                            done, or its final drain failed: what it had not
                                            delivered is counted (worker_stalled,
                                            worker_error) and it sends nothing more
    FAILED    no       never                the worker could not start (logged)

    from                      to        taken by
    IDLE, QUEUEING            RUNNING   a start: the first evaluation (IDLE), or start()
    IDLE, QUEUEING            FAILED    a start that could not start the worker
    IDLE, QUEUEING, RUNNING   STOPPING  the end of the pipeline: shutdown(), the process
                                        ending (flageval._process.ending: atexit, a stop
                                        signal, and in a pool's worker process, which
                                        ends through os._exit, the pool's own last hook:
                                        a multiprocessing finalizer, Celery's
                                        worker_process_shutdown), or the pipeline
                                        collected without shutdown
    STOPPING                  STOPPED   the worker's loop, once its final flush is done;
                                        the shutdown itself when no worker ever ran
    STOPPING                  HALTED    the shutdown, at its deadline, if the worker is not
                                        done; or when its final drain failed

DISABLED, STOPPED, HALTED and FAILED are final: nothing leaves them (but a fork). The
thread that takes the move to STOPPING is the pipeline's ``stopper``; every other
caller waits for a final phase (``wait_final``). STOPPED and HALTED race at the
deadline, the worker's loop against the shutdown's thread; the table lets the first one
win.

A forked child starts clean: the parent's queue, counts, worker and thread stay the
parent's (the parent sends them), so the child takes ``AFTER_FORK[phase]`` with an empty
hand-off, fresh counts and a new lock. A live pipeline becomes IDLE (or stays QUEUEING)
and starts its own worker on its first evaluation (start()); one whose end had begun
is STOPPED: the child has nothing of its own to deliver, and counts what it evaluates
as `closed`.
"""

from __future__ import annotations

import enum
import threading

from ._handoff import Handoff


class Phase(enum.Enum):
    DISABLED = "disabled"
    IDLE = "idle"
    QUEUEING = "queueing"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    HALTED = "halted"
    FAILED = "failed"

    @property
    def accepting(self) -> bool:
        """Whether producers append (else they count `closed`, or start the worker)."""
        return self in (Phase.QUEUEING, Phase.RUNNING)

    @property
    def final(self) -> bool:
        """Nothing leaves this phase: the pipeline's books only grow by `closed`."""
        return not TRANSITIONS[self]


_P = Phase

#: from -> the phases it may move to.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.DISABLED: frozenset(),
    _P.IDLE: frozenset({_P.RUNNING, _P.FAILED, _P.STOPPING}),
    _P.QUEUEING: frozenset({_P.RUNNING, _P.FAILED, _P.STOPPING}),
    _P.RUNNING: frozenset({_P.STOPPING}),
    _P.STOPPING: frozenset({_P.STOPPED, _P.HALTED}),
    _P.STOPPED: frozenset(),
    _P.HALTED: frozenset(),
    _P.FAILED: frozenset(),
}

#: The phase a forked child starts in, from its parent's.
AFTER_FORK: dict[Phase, Phase] = {
    _P.DISABLED: _P.DISABLED,
    _P.IDLE: _P.IDLE,
    _P.QUEUEING: _P.QUEUEING,
    _P.RUNNING: _P.IDLE,
    _P.STOPPING: _P.STOPPED,
    _P.STOPPED: _P.STOPPED,
    _P.HALTED: _P.STOPPED,
    _P.FAILED: _P.STOPPED,
}


class Lifecycle:
    """One pipeline's phase, from any thread. ``lock`` serialises moves and starts;
    ``owner`` is the thread holding it for a start (see Telemetry._locked)."""

    __slots__ = ("_final", "_handoff", "_phase", "lock", "owner", "stopper")

    def __init__(self, handoff: Handoff | None, phase: Phase = Phase.IDLE) -> None:
        self._handoff = handoff
        self._phase = phase
        if handoff is not None:
            handoff.accepting = phase.accepting
        # Re-entrant: a start holds it while it moves to RUNNING.
        self.lock = threading.RLock()
        self.owner: int | None = None
        #: The thread that took the move to STOPPING (it never waits for itself).
        self.stopper: int | None = None
        self._final = threading.Event()
        if phase.final:
            self._final.set()

    @property
    def phase(self) -> Phase:
        return self._phase

    def move(self, to: Phase) -> bool:
        """Take the transition to ``to``; False (and no effect) when ``TRANSITIONS`` has
        no such transition from the current phase."""
        with self.lock:
            if to not in TRANSITIONS[self._phase]:
                return False
            self._phase = to
            if self._handoff is not None:
                self._handoff.accepting = to.accepting
            if to is Phase.STOPPING:
                self.stopper = threading.get_ident()
            if to.final:
                self._final.set()
            return True

    def wait_final(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a final phase; at once on the stopper's own
        thread (a signal handler there would wait for itself). True once final."""
        if self.stopper == threading.get_ident():
            return self._final.is_set()
        return self._final.wait(max(0.0, timeout_s))

    def after_fork(self) -> None:
        """In a forked child: the phase ``AFTER_FORK`` gives, an empty hand-off, fresh
        counts, and a lock, event and threads of the child's own."""
        self.lock = threading.RLock()  # the parent's may have been held at fork time
        self.owner = self.stopper = None
        self._final = threading.Event()
        self._phase = phase = AFTER_FORK[self._phase]
        if self._handoff is not None:
            self._handoff.reset_after_fork()
            self._handoff.accepting = phase.accepting
        if phase.final:
            self._final.set()
