"""Transport: POST bodies to the intake with aiohttp, retrying only what is safe to retry.

Delivery is at-most-once per body (and so per row): a body is sent again only when the
intake cannot have accepted it:

* the request never left (refused, DNS, a connect or TLS handshake that stalls, an
  untrusted certificate: see _http.py for how that is told from a later timeout), or
* the intake answered 5xx or 429 (it said it did not take the body).

A body whose outcome is unknown (the connection dropped, or the response did not come
within ``request_timeout_s`` after the request went out) is not sent again: the intake
may have counted it. Its evaluations are counted under ``delivery_unknown``, so the books
still balance, and a test shows that an intake which accepted the body but lost the
response has counted it exactly once. Other 4xx are not retried: ``intake_rejected``.

Retries back off exponentially with full jitter, honour ``Retry-After`` (seconds or an
HTTP date) on 429 and 503, and never run past the caller's deadline. A body still
undeliverable when its in-cycle retries run out waits in a bounded retry buffer for the
next flush; past ``retry_buffer_bytes`` the oldest is dropped (``retry_buffer_full``);
at shutdown what is left is counted under ``intake_unavailable``.

Through an agent the route is discovered (agent.py); a 404 from it makes the agent be
asked again, and the body goes to the new route if there is one. Of an answer only the
status and a bounded snippet of an error text are read (_http.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp

from ._agent import Route, Routes, identity_headers
from ._common import RateLimitedLog, backoff_s, parse_retry_after
from ._config import Endpoint
from ._http import (
    Rejected,
    Retryable,
    discard,
    no_answer,
    not_connected,
    not_sent,
    refused,
    snippet,
    trace_config,
)
from ._losses import Dropped, Ledger
from ._wire import Body

log = logging.getLogger("flageval")

MAX_BACKOFF_S = 30.0
#: The longest wait a Retry-After can impose (a longer one is read as this).
RETRY_AFTER_CAP_S = 300.0
#: How long an error answer's text is waited for (its status is known already).
SNIPPET_WAIT_S = 0.5


@dataclasses.dataclass(slots=True)
class SenderCounts:
    """The sender's counters: each is the ``Stats`` field of its name (flageval._stats)."""

    evaluations_posted: int = 0
    rows_posted: int = 0
    bodies_posted: int = 0
    post_attempts: int = 0


class Sender:
    """Owns one ClientSession (created lazily on the worker loop) and the retry buffer."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        request_timeout_s: float,
        max_retries: int,
        retry_backoff_s: float,
        retry_buffer_bytes: int,
        verify_tls: bool,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = Ledger() if ledger is None else ledger
        self.endpoint = endpoint
        self.routes = Routes(endpoint, timeout_s=request_timeout_s, clock=clock)
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.retry_buffer_bytes = retry_buffer_bytes
        self.verify_tls = verify_tls
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        # Bodies waiting to be sent, oldest first; bounded by retry_buffer_bytes.
        self.outbox: deque[Body] = deque()
        self.outbox_bytes = 0
        # New bodies of the send in progress, not yet tried (not held for a retry).
        self.fresh: deque[Body] = deque()
        self.inflight: Body | None = None
        self.not_before = 0.0  # monotonic time before which no POST is made (429)
        # Set at shutdown: cuts short any backoff sleep of a flush in progress.
        self._interrupt: asyncio.Event | None = None
        self.counts = SenderCounts()
        self._warn = RateLimitedLog(log, interval_s=60.0)
        self._told_untrusted = False

    # -- session ----------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_ctx: ssl.SSLContext | bool = bool(self.verify_tls)
            if self.endpoint.unix_socket:
                connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
                    path=self.endpoint.unix_socket
                )
            else:
                connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=4)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
                headers={**self.endpoint.headers, **identity_headers(self.endpoint.mode)},
                # Proxies from the environment would route a local agent's traffic away.
                trust_env=False,
                # Only a snippet of an answer is read: never inflate what is not read.
                auto_decompress=False,
                trace_configs=[trace_config()],
            )
        return self._session

    def start(self) -> None:
        """Ask the agent for its route now (on the worker's loop, at its start)."""
        try:
            self.routes.start(self._get_session())
        except Exception:  # the first flush asks instead; the worker must start
            log.exception("could not start agent discovery")

    async def close(self) -> None:
        await self.routes.close()
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    # -- accounting -------------------------------------------------------------------
    @property
    def pending_evaluations(self) -> int:
        """Evaluations in bodies not yet delivered nor counted as lost."""
        n = sum(b.evaluations for b in self.outbox) + sum(b.evaluations for b in self.fresh)
        return n + (self.inflight.evaluations if self.inflight is not None else 0)

    def _drop(self, body: Body, reason: Dropped) -> None:
        self.ledger.drop(reason, body.evaluations)

    def _enqueue(self, body: Body) -> None:
        """Queue a body, evicting the oldest while the bytes held pass the bound."""
        self.outbox.append(body)
        self.outbox_bytes += len(body.data)
        while self.outbox_bytes > self.retry_buffer_bytes and len(self.outbox) > 1:
            old = self.outbox.popleft()
            self.outbox_bytes -= len(old.data)
            self._drop(old, Dropped.RETRY_BUFFER_FULL)
            self._warn.warning(
                Dropped.RETRY_BUFFER_FULL,
                "retry buffer full; oldest body's %d evaluations counted as retry_buffer_full",
                old.evaluations,
            )

    def drop_unsent(self, reason: Dropped = Dropped.INTAKE_UNAVAILABLE) -> int:
        """Count every body still waiting as lost (at shutdown). Returns evaluations."""
        n = 0
        while self.outbox:
            body = self.outbox.popleft()
            self._drop(body, reason)
            n += body.evaluations
        self.outbox_bytes = 0
        return n

    # -- sending ----------------------------------------------------------------------
    async def send_all(self, bodies: list[Body], deadline: float) -> bool:
        """Send the bodies waiting for a retry (oldest first), then ``bodies``, until
        the deadline. A body the intake cannot take now stops this call (the intake is
        down, the rest would fail the same way); it and the new bodies not yet tried
        then wait in the bounded retry buffer for the next call. New bodies count
        against ``retry_buffer_bytes`` only once they have to wait: a healthy intake
        gets a flush bigger than the buffer whole. Returns True when nothing is left
        waiting."""
        fresh = self.fresh
        fresh.extend(bodies)
        try:
            if (self.outbox or fresh) and self._clock() < deadline:
                # Without an EVP proxy at the agent, _send_one counts each body instead.
                await self.routes.current(self._get_session(), deadline)
            while (self.outbox or fresh) and self._clock() < deadline:
                retried = bool(self.outbox)
                if retried:
                    body = self.outbox.popleft()
                    self.outbox_bytes -= len(body.data)
                else:
                    body = fresh.popleft()
                self.inflight = body
                done = False
                try:
                    done = await self._send_one(body, deadline)
                finally:
                    self.inflight = None
                    # Not done (also when cancelled): it waits for the next call, unless
                    # it may have reached the intake (then it was counted as unknown).
                    if not done and not body.maybe_sent:
                        if retried:
                            self.outbox.appendleft(body)
                            self.outbox_bytes += len(body.data)
                        else:
                            fresh.appendleft(body)
                if not done:
                    break
        finally:
            # Also when cancelled: what could not go waits, oldest first, bounded.
            while fresh:
                self._enqueue(fresh.popleft())
        return not self.outbox

    def interrupt(self, on: bool = True) -> None:
        """Cut short (or stop cutting short) backoff sleeps; used by shutdown."""
        if self._interrupt is None:
            self._interrupt = asyncio.Event()
        if on:
            self._interrupt.set()
        else:
            self._interrupt.clear()

    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; False if interrupted."""
        if self._interrupt is None:
            self._interrupt = asyncio.Event()
        if self._interrupt.is_set():
            return False
        try:
            await asyncio.wait_for(self._interrupt.wait(), delay)
        except TimeoutError:
            return True
        return False

    async def _send_one(self, body: Body, deadline: float) -> bool:
        """True when done with the body (delivered or counted as lost); False to buffer."""
        tries = 0
        wake_by = deadline - min(0.25, self.request_timeout_s)  # time left for an answer
        while True:
            wait = self.not_before - self._clock()
            if wait > 0 and (self._clock() + wait > wake_by or not await self._sleep(wait)):
                return False
            if self._clock() >= deadline:
                return False  # not sent: it waits (or is counted unavailable at shutdown)
            route = self.routes.route
            if route.url is None:
                self._drop(body, Dropped.AGENT_NO_EVP_PROXY)
                return True
            try:
                await self._post(body, deadline, route)
            except Retryable as exc:
                tries += 1
                if exc.wait_s is not None:
                    self.not_before = self._clock() + exc.wait_s
                    delay = exc.wait_s
                else:
                    delay = backoff_s(tries - 1, self.retry_backoff_s, MAX_BACKOFF_S)
                if exc.now:
                    self._warn.warning(
                        exc.why,
                        "intake %s unavailable (%s); will retry",
                        route.display,
                        exc.said,
                    )
                if not exc.now or tries > self.max_retries or self._clock() + delay > wake_by:
                    return False
                if not await self._sleep(delay):
                    return False
                continue
            except Rejected as exc:
                if exc.status == 404 and exc.reason is Dropped.INTAKE_REJECTED:
                    # The agent may have lost this route (a downgrade, a new config): it
                    # did not take the body, so the body may go where the agent says now.
                    moved = await self.routes.after_404(self._get_session(), deadline, route)
                    if moved is not None:
                        tries += 1
                        continue
                self._drop(body, exc.reason)
                self._warn.warning(
                    exc.reason,
                    "intake %s: %s; %d evaluations counted as %s%s",
                    route.display,
                    exc.said,
                    body.evaluations,
                    exc.reason,
                    f" (it said: {exc.text})" if exc.text else "",
                )
                return True
            self._told_untrusted = False
            counts = self.counts
            counts.bodies_posted += 1
            counts.rows_posted += body.rows
            counts.evaluations_posted += body.evaluations
            return True

    async def _post(self, body: Body, deadline: float, route: Route) -> None:
        assert route.url is not None
        session = self._get_session()
        self.counts.post_attempts += 1
        # No request outlives the caller's deadline: a hanging intake must not hold a
        # flush (or shutdown) past it, nor leave the rest of the outbox uncounted.
        total = min(self.request_timeout_s, max(0.001, deadline - self._clock()))
        attempt = SimpleNamespace(sent=False)  # set by the trace once the request goes
        text = ""
        try:
            async with session.post(
                route.url,
                data=body.data,
                timeout=aiohttp.ClientTimeout(total=total),
                # A redirect would replay the body and the session's headers (DD-API-KEY)
                # at wherever it points; a 3xx is counted as rejected instead.
                allow_redirects=False,
                trace_request_ctx=attempt,
            ) as resp:
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                if 200 <= status < 300:
                    discard(resp)
                else:
                    wait = min(SNIPPET_WAIT_S, max(0.0, deadline - self._clock()))
                    text = await snippet(resp, wait, self.endpoint.headers.get("DD-API-KEY"))
        except asyncio.CancelledError:
            if attempt.sent:
                # Cancelled mid-request: the intake may have the body. Never resend it.
                body.maybe_sent = True
                self._drop(body, Dropped.DELIVERY_UNKNOWN)
            raise
        except aiohttp.ClientConnectorCertificateError as exc:
            self._tell_untrusted(route, exc)
            raise Retryable("tls_untrusted", "TLS certificate not trusted", now=False) from exc
        except aiohttp.ClientConnectorError as exc:
            # Nothing reached the intake: safe to send again.
            raise Retryable("connect_error", not_connected(exc)) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if not attempt.sent:
                # A connect or TLS handshake that stalled (aiohttp says only "timeout"):
                # no byte of the request left, so this is a refused connection, not a loss.
                raise Retryable(*not_sent(exc, total)) from exc
            # The body may have been taken: at-most-once says do not send it again.
            raise Rejected(Dropped.DELIVERY_UNKNOWN, None, said=no_answer(exc, total)) from exc
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            wait_s = (
                parse_retry_after(retry_after, RETRY_AFTER_CAP_S) if status in (429, 503) else None
            )
            raise Retryable(f"status_{status}", f"it answered {status}", wait_s)
        raise Rejected(Dropped.INTAKE_REJECTED, status, text, said=refused(status))

    def _tell_untrusted(self, route: Route, exc: aiohttp.ClientConnectorCertificateError) -> None:
        """Once (until a post succeeds): what an untrusted certificate is, not a retry."""
        if self._told_untrusted:
            return
        self._told_untrusted = True
        log.error(
            "the TLS certificate of %s is not trusted (%s): nothing is sent "
            "there until it is. Make its CA trusted, or set verify_tls=False "
            "(FLAGEVAL_VERIFY_TLS=false) only for an agent you trust.",
            route.display,
            getattr(exc.certificate_error, "verify_message", None) or "verification failed",
        )
