"""The provider's status: one explicit state, the transitions it may take, and the events
that report them to the OpenFeature SDK.

`Status` has a member for each OpenFeature provider status the provider can be in, plus
CLOSED. `Lifecycle` holds the current one and takes only the transitions listed in
`TRANSITIONS`; any other is refused (``move`` returns False and nothing happens), so a
fatal provider cannot become ready again, a closed one cannot emit, and so on.

    from                 to      event emitted                    when
    NOT_READY            READY   none: initialize() returns       the first fetch succeeded
    NOT_READY            ERROR   none: initialize() raises        it failed (not 401/403), or
                                 GeneralError                     initialize() stopped waiting
    NOT_READY            FATAL   none: initialize() raises        401/403
                                 ProviderFatalError
    READY                STALE   PROVIDER_STALE                   change detection lost for
                                                                  ``stale_after_s``
    STALE                READY   PROVIDER_READY                   change detection back, or idle
    ERROR                READY   PROVIDER_READY                   a fetch succeeded
    READY, STALE, ERROR  FATAL   PROVIDER_ERROR (PROVIDER_FATAL)  401/403 from the bulk endpoint
                                                                  or from a stream sent our
                                                                  credentials
    READY, STALE         ERROR   PROVIDER_ERROR (INVALID_CONTEXT) the new context cannot be
                                                                  encoded
    READY, STALE         REJECTED PROVIDER_ERROR (the body's code) 400/401/403 while serving the
                                                                  persisted entry (ADR-0009)
    all but CLOSED       CLOSED  none                             shutdown

REJECTED is ADR-0009's "log, emit PROVIDER_ERROR and keep serving cached for the
session": the SDK shows ERROR and still asks the provider, which answers from the
persisted entry (reason CACHED) and makes no request again.

Refused, among others: FATAL and REJECTED to anything but CLOSED; anything out of CLOSED;
ERROR to STALE (ERROR already says the values are not current, and the SDK would read
STALE as better); NOT_READY to STALE. READY to ERROR only for a context that cannot be
encoded: a failed fetch keeps serving the last good values, at worst STALE.

Transitions out of NOT_READY are silent because initialize() reports them itself. When
initialize() stops waiting and raises GeneralError, the SDK shows ERROR whatever the real
status is; `Lifecycle.initialize_raised` either takes the silent move to ERROR (start's
outcome is then reported by events) or reports the current status again.

The SDK sets the status for initialize()'s own outcome (READY when it returns, ERROR
when it raises) after it returns, on the caller's thread, while the provider's loop may
already have applied a later fetch (a 401 behind the persisted entry, the success of a
fetch initialize() gave up on). `SdkOrder` holds the events the loop emits meanwhile
and delivers them, in order, once the SDK has set that status: the status the
application reads is then the provider's latest.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import time
from collections.abc import Callable
from typing import Protocol

from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.provider import ProviderStatus

from ._diagnostics import logger


class Emitter(Protocol):
    """Where provider events go (`AbstractProvider.emit`)."""

    def emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None: ...


class Status(enum.Enum):
    NOT_READY = "NOT_READY"  # initialize() is waiting for the first fetch
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"  # initialize() failed, not fatally: retrying in the background
    FATAL = "FATAL"  # credentials rejected: no request ever again
    REJECTED = "REJECTED"  # ADR-0009: rejected while serving the persisted entry; kept
    CLOSED = "CLOSED"  # shut down

    @property
    def provider_status(self) -> ProviderStatus:
        """What the SDK reports for a provider in this status."""
        if self is Status.CLOSED:
            return ProviderStatus.NOT_READY  # as for any provider that was shut down
        if self is Status.REJECTED:
            return ProviderStatus.ERROR
        return ProviderStatus(self.value)

    @property
    def live(self) -> bool:
        """Whether requests may still be made (not FATAL, REJECTED or CLOSED)."""
        return self not in (Status.FATAL, Status.REJECTED, Status.CLOSED)


_S = Status
_E = ProviderEvent

#: from -> {to: the event that reports the move, None when it is silent}.
TRANSITIONS: dict[Status, dict[Status, ProviderEvent | None]] = {
    _S.NOT_READY: {_S.READY: None, _S.ERROR: None, _S.FATAL: None, _S.CLOSED: None},
    _S.READY: {
        _S.STALE: _E.PROVIDER_STALE,
        _S.ERROR: _E.PROVIDER_ERROR,
        _S.FATAL: _E.PROVIDER_ERROR,
        _S.REJECTED: _E.PROVIDER_ERROR,
        _S.CLOSED: None,
    },
    _S.STALE: {
        _S.READY: _E.PROVIDER_READY,
        _S.ERROR: _E.PROVIDER_ERROR,
        _S.FATAL: _E.PROVIDER_ERROR,
        _S.REJECTED: _E.PROVIDER_ERROR,
        _S.CLOSED: None,
    },
    _S.ERROR: {_S.READY: _E.PROVIDER_READY, _S.FATAL: _E.PROVIDER_ERROR, _S.CLOSED: None},
    _S.FATAL: {_S.CLOSED: None},
    _S.REJECTED: {_S.CLOSED: None},
    _S.CLOSED: {},
}

# The event that brings an SDK showing ERROR back to each status (ERROR needs none).
_REPORTS: dict[Status, ProviderEvent] = {
    _S.READY: _E.PROVIDER_READY,
    _S.STALE: _E.PROVIDER_STALE,
    _S.FATAL: _E.PROVIDER_ERROR,
    _S.REJECTED: _E.PROVIDER_ERROR,
}


class Lifecycle:
    """Owns the current `Status` and the events that report its changes. Loop only."""

    __slots__ = ("_details", "_emitter", "_status")

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter
        self._status = Status.NOT_READY
        self._details = ProviderEventDetails()

    @property
    def status(self) -> Status:
        return self._status

    def move(self, to: Status, details: ProviderEventDetails | None = None) -> bool:
        """Take the transition to ``to`` and emit its event, with ``details``; False (and
        no effect) when `TRANSITIONS` has no such transition from the current status."""
        allowed = TRANSITIONS[self._status]
        if to not in allowed:
            return False
        was, self._status = self._status, to
        self._details = details if details is not None else ProviderEventDetails()
        event = allowed[to]
        if event is not None:
            self._emitter.emit(event, self._details)
        logger.debug("status %s -> %s", was.value, to.value)
        return True

    def report(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        """Emit ``event`` without a move (the status stays what it is, and says so)."""
        self._details = details
        self._emitter.emit(event, details)

    def initialize_raised(self) -> None:
        """initialize() raised GeneralError without waiting for the first fetch's outcome,
        so the SDK shows ERROR now."""
        if self._status is Status.NOT_READY:
            self.move(Status.ERROR)
            return
        event = _REPORTS.get(self._status)
        if event is not None:
            self._emitter.emit(event, self._details)


class SdkOrder:
    """An `Emitter` that holds the events emitted from ``initializing()`` until the SDK
    has taken initialize()'s outcome, then delivers them in order through ``emit``.

    The SDK keeps the status of the object it registered: this provider, or a wrapper
    that forwards its events (``flageval.instrument``). ``attached`` follows ``on_emit``
    to the registry that dispatches them; without one (initialize() called directly,
    another SDK), events wait only for initialize() to return. Emits run on the loop;
    ``initializing``/``initialized`` on the thread that runs initialize()."""

    _POLL_S = 0.002  # the SDK sets its status microseconds after initialize() returns
    _GIVE_UP_S = 5.0  # a provider replaced during initialize(): its status never comes

    def __init__(self, emit: Callable[[ProviderEvent, ProviderEventDetails], None]) -> None:
        self._emit = emit
        self._sdk_status: Callable[[], ProviderStatus | None] = lambda: None
        self._holding = False
        self._returned_at: float | None = None
        self._held: list[tuple[ProviderEvent, ProviderEventDetails]] = []
        self._checking = False

    def attached(self, provider: object, on_emit: object) -> None:
        key, owner = provider, getattr(on_emit, "__self__", None)
        for _ in range(4):  # a wrapper of a wrapper...
            getter = getattr(owner, "get_provider_status", None)
            if callable(getter):
                self._sdk_status = functools.partial(getter, key)
                return
            key, owner = owner, getattr(getattr(owner, "_on_emit", None), "__self__", None)
        self._sdk_status = lambda: None

    def initializing(self) -> None:
        # A life before this one (shut down, then initialized again) left nothing to send.
        self._held = []
        self._checking = False
        self._returned_at = None
        self._holding = True

    def initialized(self) -> None:
        self._returned_at = time.monotonic()

    def emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        if self._holding and self._taken():
            self._release()
        if not self._holding:
            self._emit(event, details)
            return
        self._held.append((event, details))
        if not self._checking:
            self._checking = True
            asyncio.get_running_loop().call_later(self._POLL_S, self._check)

    def _taken(self) -> bool:
        """Whether the SDK has set the status for initialize()'s outcome (or will not)."""
        returned = self._returned_at
        if returned is None:
            return False
        status = self._sdk_status()
        return (
            status is None
            or status is not ProviderStatus.NOT_READY
            or time.monotonic() - returned > self._GIVE_UP_S
        )

    def _check(self) -> None:
        if not self._holding:
            self._checking = False
        elif self._taken():
            self._release()
        else:
            asyncio.get_running_loop().call_later(self._POLL_S, self._check)

    def _release(self) -> None:
        self._holding = self._checking = False
        held, self._held = self._held, []
        for event, details in held:
            self._emit(event, details)
