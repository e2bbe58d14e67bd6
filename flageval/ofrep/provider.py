"""`OFREPProvider`: the OpenFeature face of the package.

Two models. Per-context (the default): each evaluation is answered for the context the
SDK hands over (``_percontext``), from a bounded cache of bulk evaluations by canonical
context; the provider's own context (the API's global one at ``initialize``) is still
fetched, followed and persisted as below, and drives change detection and the status.
Static (``context=`` given, ``context_model="static"``, or after ``set_context``): one
bulk evaluation for one context (the one given, else the API's global context),
answered from memory: a resolve reads an immutable dict that the loop thread replaces
in one assignment, and the context passed to an individual evaluation is not sent.

openfeature-sdk 0.10 has no context-changed callback for providers, so a provider that
follows the global context notices a new one on the next resolve (an identity check of
one object, ~40 ns) and re-fetches in the background; ``on_context_changed`` has the
signature of the OpenFeature static-context callback for SDKs that call it.

A context the provider cannot encode (an attribute whose ``__str__`` raises, a cyclic
list) is found on the caller's thread, so the very resolve that brought it answers
INVALID_CONTEXT.

Process life (``flageval._process``): at exit the provider shuts down; in a forked child
(gunicorn ``--preload`` workers) the parent's loop, session and sockets are parked, never
touched, the inherited evaluations are served, and the first use starts the child's own
loop, streams and polling, which revalidate them.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from openfeature.evaluation_context import EvaluationContext, get_evaluation_context
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import GeneralError, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import AbstractProvider, FeatureProvider, Metadata

from flageval import _process as process
from flageval._loop import LoopThread, park

from ._config import SETTINGS, OFREPConfig, load_config
from ._context import ContextEncodingError, encode_context
from ._diagnostics import Counter, logger, new_stats, snapshot
from ._percontext import PerContext
from ._refresh import Handover, Refresher
from ._resolve import ContextError, FlagEntry, TypeRule, resolve
from ._resolvers import Resolvers
from ._snapshot import Anchor, Shared
from ._status import SdkOrder, Status

_monotonic = time.monotonic
T = TypeVar("T")

# How long initialize() waits beyond the request timeout (a busy loop starts the fetch late).
_START_GRACE_S = 5.0


class OFREPProvider(Resolvers, AbstractProvider):
    """An OpenFeature provider for OFREP bulk evaluation, each evaluation answered for
    its own context by default (``context=`` or ``context_model="static"``: one
    context), kept fresh by ETag-conditional re-fetches driven by event streams
    (``change_detection="sse"``, the default), by polling (``"polling"``) or by
    nothing but context changes (``"none"``).

    Every setting is an argument (docs/ofrep.md has each one's default and range); one
    left out, or None, falls back to its ``OFREP_*`` variable where ADR-0007 and ADR-0009
    give it one (``OFREP_ENDPOINT``, ``OFREP_HEADERS`` as ``k=v,k2=v2`` URL-decoded
    first, ``OFREP_TIMEOUT_MS``, ``OFREP_CACHE_MODE``, ``OFREP_CACHE_DIR``,
    ``OFREP_CACHE_TTL_S``, ``OFREP_CACHE_KEY_PREFIX``), else to its default.
    With ``"sse"`` the provider polls every ``poll_interval_s`` (default 30; 0: never)
    only while no stream is advertised or one cannot be held; ``inactivity_delay_s``
    overrides the server's ``inactivityDelaySec``. The
    keyword-only arguments tune timings; the defaults suit production. Invalid settings
    raise ``ValueError`` naming the setting.
    """

    def __init__(
        self,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
        change_detection: str | None = None,
        poll_interval_s: float | None = None,
        inactivity_delay_s: float | None = None,
        context: EvaluationContext | None = None,
        *,
        sse_read_timeout_s: float | None = None,
        reconnect_min_s: float | None = None,
        reconnect_max_s: float | None = None,
        retry_min_s: float | None = None,
        retry_max_s: float | None = None,
        stale_after_s: float | None = None,
        shutdown_timeout_s: float | None = None,
        event_debounce_s: float | None = None,
        event_fetch_interval_s: float | None = None,
        cache_mode: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_ttl_s: float | None = None,
        cache_key_prefix: str | None = None,
        context_model: str | None = None,
        context_wait_s: float | None = None,
        context_max_entries: int | None = None,
        context_max_bytes: int | None = None,
        context_key_attributes: list[str] | tuple[str, ...] | None = None,
        context_recent_s: float | None = None,
        context_max_requests: int | None = None,
        context_single_flag: str | None = None,
    ) -> None:
        given = dict(locals())  # the arguments by name, before any other local exists
        super().__init__()
        if context is not None and not isinstance(context, EvaluationContext):
            raise ValueError("context must be an openfeature EvaluationContext")
        self._config: OFREPConfig = load_config(**{name: given[name] for name in SETTINGS})
        self._context = context
        self._follow_global = context is None
        self._seen_global: EvaluationContext | None = None
        self._shared = Shared()
        self._stats = new_stats()
        self._per: PerContext | None = None
        if context is None and self._config.context_model == "per-context":
            self._per = PerContext(self._config, self._stats, self._shared)
        self._order = SdkOrder(self.emit)  # the loop's events, after the SDK's own status
        self._lifecycle = threading.Lock()
        self._thread: LoopThread | None = None
        self._refresher: Refresher | None = None
        self._pid = os.getpid()
        self._inherited: Handover | None = None  # a forked child's, until its first use
        process.track(self)

    @property
    def config(self) -> OFREPConfig:
        return self._config

    def get_metadata(self) -> Metadata:
        return Metadata(name="flageval-ofrep")

    def attach(
        self, on_emit: Callable[[FeatureProvider, ProviderEvent, ProviderEventDetails], None]
    ) -> None:
        super().attach(on_emit)
        self._order.attached(self, on_emit)

    # -- lifecycle -------------------------------------------------------------------

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Start the loop thread and run the first bulk fetch on it; raise if it fails
        (ProviderFatalError on 401/403, GeneralError otherwise)."""
        self._order.initializing()
        try:
            self._initialize(evaluation_context)
        finally:
            self._order.initialized()

    def _initialize(self, evaluation_context: EvaluationContext) -> None:
        with self._lifecycle:
            if self._thread is not None:
                return  # already running (the same provider bound to a second domain)
            if self._follow_global:
                self._seen_global = evaluation_context
                context = evaluation_context
            else:
                context = self._context or EvaluationContext()
            thread = LoopThread("flageval-ofrep")
            try:
                started = thread.start()
            except RuntimeError as exc:
                raise GeneralError(f"could not start the provider's thread: {exc}") from None
            if not started:
                thread.stop(0)  # a starved interpreter: the late loop stops at once
                raise GeneralError("the provider's loop thread did not start in time")
            refresher = self._new_refresher(thread)
            self._inherited = None  # initialize() in a forked child starts afresh
        body = self._encode(context)
        future = thread.submit(refresher.start(body))
        if future is None:  # shut down by another thread meanwhile
            raise GeneralError("the provider was shut down during initialize")
        try:
            future.result(timeout=self._config.timeout_s + _START_GRACE_S)
        except concurrent.futures.TimeoutError:
            # As after any failed initialize, the fetch and its retries go on; READY follows.
            thread.call_soon(refresher.initialize_abandoned)
            raise GeneralError("initial bulk evaluation did not finish in time") from None
        except OpenFeatureError:
            if refresher.status is Status.FATAL:
                self.shutdown()
            raise

    def _new_refresher(self, thread: LoopThread) -> Refresher:
        refresher = Refresher(self._config, self._shared, self._stats, self._order)
        per = self._per
        if per is not None:
            per.bind(thread, refresher)
            refresher.on_trigger(per.refetched)
        self._thread, self._refresher = thread, refresher
        return refresher

    async def _close(self, refresher: Refresher) -> None:
        if self._per is not None:
            await self._per.close()
        await refresher.close()

    def shutdown(self) -> None:
        """Close streams, the HTTP session and the loop thread, within
        ``shutdown_timeout_s`` overall."""
        with self._lifecycle:
            thread, refresher = self._thread, self._refresher
            self._thread = self._refresher = None
            self._inherited = None
        if thread is None or refresher is None:
            return
        if thread.in_loop_thread():
            # Called from an event handler on our own loop: cannot wait for ourselves.
            closing = thread.submit(self._close(refresher))
            if closing is not None:
                closing.add_done_callback(lambda _: thread.stop(0))
            return
        deadline = _monotonic() + self._config.shutdown_timeout_s
        closing = thread.submit(self._close(refresher))
        try:
            if closing is not None:
                closing.result(timeout=self._config.shutdown_timeout_s)
        except Exception:
            logger.warning("provider shutdown did not complete cleanly", exc_info=True)
        if not thread.stop(max(0.1, deadline - _monotonic())):
            logger.warning("provider loop thread did not stop within the shutdown timeout")
        self._shared.idle = False

    # -- context ---------------------------------------------------------------------

    def set_context(self, context: EvaluationContext) -> concurrent.futures.Future[bool]:
        """Use ``context`` from now on, for every evaluation (the static model, and no
        longer the API's global context).
        The stored ETag is dropped and the bulk evaluation re-fetched in the background;
        the returned future resolves to True once the new evaluation is served, False if
        that fetch failed or was superseded. Until then the previous one is served."""
        if not isinstance(context, EvaluationContext):
            raise ValueError("context must be an openfeature EvaluationContext")
        self._follow_global = False
        self._context = context
        self._per = None
        return self._switch_context(context)

    def on_context_changed(
        self, old_context: EvaluationContext | None, new_context: EvaluationContext
    ) -> None:
        """OpenFeature's static-context callback (not called by openfeature-sdk 0.10).
        Unlike ``set_context`` it keeps following the global context if the provider
        did: a later change of the global context still takes over."""
        self._switch_context(new_context)

    def _encode(self, context: EvaluationContext) -> bytes | ContextEncodingError:
        """The request body, or the reason there is none; then every resolve from now on
        (this thread's next one included) answers INVALID_CONTEXT."""
        try:
            return encode_context(context)
        except ContextEncodingError as exc:
            self._shared.entries = ContextError(str(exc))
            self._shared.anchor = None
            return exc

    def _switch_context(
        self, context: EvaluationContext, from_global: bool = False
    ) -> concurrent.futures.Future[bool]:
        self._restart_if_forked()
        thread, refresher = self._thread, self._refresher
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        done.set_result(False)
        if thread is None or refresher is None:
            return done  # not started: initialize() will use this context
        body = self._encode(context)

        async def switch() -> bool:
            # Submitted by a resolve that raced a set_context(): the explicit context wins.
            if from_global and not self._follow_global:
                return False
            if isinstance(body, ContextEncodingError):
                refresher.context_unusable(str(body))
                return False
            return await refresher.set_context(body)

        return thread.submit(switch()) or done  # None: the loop is closed

    def _global_context_changed(self, context: EvaluationContext) -> None:
        self._seen_global = context
        self._switch_context(context, from_global=True)

    # -- process life (flageval._process) --------------------------------------------

    def at_exit(self) -> None:
        if self._pid == os.getpid():
            self.shutdown()

    def after_fork_in_child(self) -> None:
        """The parent's loop, thread, session and sockets are parked, never used or
        closed here; the inherited evaluation stays served until the first use."""
        self._lifecycle = threading.Lock()  # the parent's may have been held at fork time
        thread, refresher = self._thread, self._refresher
        self._thread = self._refresher = None
        self._pid = os.getpid()
        self._shared.idle = self._shared.wake_requested = False
        if self._per is not None:
            self._per.after_fork()
        if thread is None or refresher is None:
            return
        thread.forget()
        park(refresher)
        handover = refresher.handover()
        if handover.status.live:  # FATAL, REJECTED and CLOSED make no request again
            self._inherited = handover

    def _restart_if_forked(self) -> None:
        """In a forked child, on first use: our own loop, from the parent's evaluation."""
        with self._lifecycle:
            inherited, self._inherited = self._inherited, None
            if inherited is None or self._thread is not None:
                return
            thread = LoopThread("flageval-ofrep")
            try:
                thread.start(timeout_s=0)  # the resolve that got here does not wait
            except RuntimeError:
                logger.warning("forked child: could not start the provider's thread")
                return
            refresher = self._new_refresher(thread)
            self._stats[Counter.FORK_RESTARTS] += 1
        thread.submit(refresher.adopt(inherited))

    # -- diagnostics -----------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since construction (fetch outcomes, stream events, coalescing...)."""
        return snapshot(self._stats)

    # -- resolution: the hot path ------------------------------------------------------

    def _touch(self) -> tuple[Mapping[str, FlagEntry] | None, Anchor]:
        """What this resolve answers from (the entries, and the provider's own context's
        answer for the per-context path): read before an idle provider is woken, so the
        resolve that wakes it is answered from memory whatever its re-fetch does."""
        shared = self._shared
        if self._inherited is not None:
            self._restart_if_forked()
        shared.last_used = _monotonic()
        if self._follow_global:
            current = get_evaluation_context()
            if current is not self._seen_global and self._thread is not None:
                self._global_context_changed(current)
        entries, anchor = shared.entries, shared.anchor
        if shared.idle and not shared.wake_requested:
            self._wake()
        return entries, anchor

    def _wake(self) -> None:
        thread, refresher = self._thread, self._refresher
        if thread is not None and refresher is not None:
            self._shared.wake_requested = True
            thread.call_soon(refresher.resume)

    def _answer(
        self, flag_key: str, default: T, context: EvaluationContext | None, rule: TypeRule
    ) -> FlagResolutionDetails[T]:
        entries, anchor = self._touch()
        per = self._per
        if per is None or context is None:
            return resolve(entries, flag_key, default, rule)
        return per.answer(context, flag_key, default, rule, anchor)

    async def _answer_async(
        self, flag_key: str, default: T, context: EvaluationContext | None, rule: TypeRule
    ) -> FlagResolutionDetails[T]:
        entries, anchor = self._touch()
        per = self._per
        if per is None or context is None:
            return resolve(entries, flag_key, default, rule)
        return await per.answer_async(context, flag_key, default, rule, anchor)
