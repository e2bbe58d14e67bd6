"""The Datadog agent's conventions: which EVP proxy route to post to, and who is posting.

Discovery, as dd-trace-py does it (``ddtrace/internal/agent.py`` ``info()``, the EVP
route selector): ``GET {agent}/info``; ``/evp_proxy/v4/`` when its ``endpoints`` list
it, else ``/evp_proxy/v2/``; ``evp_proxy_allowed_headers`` says whether the agent
forwards our origin headers. Asked once when the worker starts (on its loop, never on
an evaluating thread), bounded by ``request_timeout_s``, and again:

* after the route answered 404 (at most every ``REDISCOVER_AFTER_404_S``),
* while the route is the fallback or the agent lists no proxy (at most every
  ``RECHECK_S``, at a flush).

``/info`` that cannot be had (404 from an old agent, a timeout, an error, a body that
is not the agent's) means the v2 route, which every agent with an EVP proxy serves. An
agent whose ``endpoints`` list neither route has no EVP proxy: one ERROR, and the
sender counts bodies as ``agent_no_evp_proxy`` instead of posting into a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ._config import INTAKE_PATH, Endpoint
from ._container import container_headers

log = logging.getLogger("flageval")

V4 = "/evp_proxy/v4/"
V2 = "/evp_proxy/v2/"
ORIGIN = "flageval"
ORIGIN_HEADER = "DD-EVP-ORIGIN"
ORIGIN_VERSION_HEADER = "DD-EVP-ORIGIN-VERSION"
#: A real /info is a few KiB; more than this is not the agent's answer.
INFO_MAX_BYTES = 256 * 1024
RECHECK_S = 60.0
REDISCOVER_AFTER_404_S = 30.0


def version() -> str:
    """flageval's ``__version__``, read when asked: importing the package from here
    would be an import cycle, and importlib.metadata costs ~70 ms to import."""
    return str(getattr(sys.modules.get("flageval"), "__version__", "unknown"))


def identity_headers(mode: str) -> dict[str, str]:
    """Who is posting: the EVP origin and a User-Agent, and (through an agent, inside
    a container) the container/entity ids the agent tags with."""
    headers = {
        ORIGIN_HEADER: ORIGIN,
        ORIGIN_VERSION_HEADER: version(),
        "User-Agent": f"flageval/{version()} (Python {'.'.join(map(str, sys.version_info[:3]))})",
    }
    if mode != "agentless":
        headers.update(container_headers())
    return headers


@dataclasses.dataclass(frozen=True)
class Route:
    """Where bodies go now. ``url`` None: the agent lists no EVP proxy."""

    url: str | None
    #: "v4", "v2" (listed, or the fallback), "none" (not listed), "fixed" (not an agent).
    proxy: str
    #: True when the agent's /info chose it; False for the fallback and fixed routes.
    discovered: bool
    display: str
    agent_version: str | None = None


def _with_path(url: str, path: str) -> str:
    """``url`` (the configured v2 route) with its intake path replaced by ``path``."""
    parts = urlsplit(url)
    base = parts.path[: -len(INTAKE_PATH)] if parts.path.endswith(INTAKE_PATH) else ""
    return urlunsplit((parts.scheme, parts.netloc, base + path, parts.query, ""))


def parse_info(info: Any) -> tuple[str | None, str | None, bool | None]:
    """(proxy, agent version, forwards our origin headers) from an /info body. proxy is
    "v4", "v2", "none", or None when the body lists no endpoints at all (not read)."""
    if not isinstance(info, dict):
        return None, None, None
    raw_version = info.get("version")
    agent_version = raw_version if isinstance(raw_version, str) else None
    endpoints = info.get("endpoints")
    if not isinstance(endpoints, list):
        return None, agent_version, None
    listed = {e.rstrip("/") + "/" for e in endpoints if isinstance(e, str)}
    proxy = "v4" if V4 in listed else "v2" if V2 in listed else "none"
    allowed = info.get("evp_proxy_allowed_headers")
    forwards = None
    if isinstance(allowed, list):
        names = {a.strip().lower() for a in allowed if isinstance(a, str)}
        forwards = {ORIGIN_HEADER.lower(), ORIGIN_VERSION_HEADER.lower()} <= names
    return proxy, agent_version, forwards


class Routes:
    """The sender's route, discovered from the agent (on the sender's loop only)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._clock = clock
        self.discoverable = endpoint.mode == "agent"
        self.route = Route(
            endpoint.url, "v2" if self.discoverable else "fixed", False, endpoint.display
        )
        self.info_requests = 0
        self._task: asyncio.Task[None] | None = None
        self._asked_at: float | None = None
        self._after_404_at = -REDISCOVER_AFTER_404_S
        self._told_origin = False
        self._told_none = False  # once until a proxy is listed again (not on every flap)

    def _info_url(self) -> str:
        return _with_path(self.endpoint.url, "/info")

    def _route(self, proxy: str, discovered: bool, agent_version: str | None) -> Route:
        if proxy == "none":
            return Route(None, "none", True, self.endpoint.display, agent_version)
        path = (V4 if proxy == "v4" else V2) + "api/v2/flagevaluation"
        url = _with_path(self.endpoint.url, path)
        if self.endpoint.unix_socket:
            shown = f"unix://{self.endpoint.unix_socket} {path}"
        else:
            shown = _with_path(self.endpoint.display, path)
        return Route(url, proxy, discovered, shown, agent_version)

    # -- when to ask ----------------------------------------------------------------
    def start(self, session: aiohttp.ClientSession) -> None:
        """Ask the agent now, in the background (once: at the worker's start)."""
        if self.discoverable and self._task is None and self._asked_at is None:
            self._task = asyncio.get_running_loop().create_task(self._discover(session))

    def _due(self) -> bool:
        if not self.discoverable:
            return False
        if self._asked_at is None:
            return True
        if self.route.discovered and self.route.url is not None:
            return False
        return self._clock() - self._asked_at >= RECHECK_S

    async def current(self, session: aiohttp.ClientSession, deadline: float) -> Route:
        """The route for this flush: waits for a discovery in progress (or due) at most
        the request timeout and half of what is left before ``deadline``; past that the
        route known so far serves, and the discovery goes on."""
        if self._task is None and self._due():
            self._task = asyncio.get_running_loop().create_task(self._discover(session))
        task = self._task
        if task is not None:
            # asyncio.wait: neither cancels the discovery at the bound nor raises its end.
            await asyncio.wait(
                {task}, timeout=min(self.timeout_s, max(0.0, (deadline - self._clock()) / 2))
            )
        return self.route

    async def after_404(
        self, session: aiohttp.ClientSession, deadline: float, failed: Route
    ) -> Route | None:
        """``failed`` answered 404: ask the agent again (at most every 30 s). The new
        route when it differs from ``failed`` (the body can go there), else None."""
        if not self.discoverable:
            return None
        if self.route is failed:
            now = self._clock()
            if now - self._after_404_at < REDISCOVER_AFTER_404_S:
                return None
            self._after_404_at = now
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._discover(session))
            await self.current(session, deadline)
        new = self.route
        return new if new.url != failed.url else None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- asking ---------------------------------------------------------------------
    async def _discover(self, session: aiohttp.ClientSession) -> None:
        self._asked_at = self._clock()
        self.info_requests += 1
        before = self.route
        try:
            try:
                info = await self._ask(session)
            except Exception as exc:
                # The post that follows reports an agent that is down; this only decides.
                log.debug("no /info from the agent (%s); using %s", type(exc).__name__, V2)
                info = None
            proxy, agent_version, forwards = parse_info(info)
            self.route = self._route(proxy or "v2", proxy is not None, agent_version)
            if forwards is False and not self._told_origin:
                self._told_origin = True
                log.info(
                    "the agent (version %s) does not forward %s/%s "
                    "(evp_proxy_allowed_headers): rows arrive without flageval's origin",
                    agent_version,
                    ORIGIN_HEADER,
                    ORIGIN_VERSION_HEADER,
                )
            self._tell(before, self.route)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _ask(self, session: aiohttp.ClientSession) -> Any:
        """The parsed /info body, or None when the agent has none (an old agent: 404)."""
        async with session.get(
            self._info_url(),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            allow_redirects=False,
        ) as resp:
            if resp.status != 200:
                log.debug("agent /info answered %s; using %s", resp.status, V2)
                return None
            data = await resp.content.read(INFO_MAX_BYTES + 1)
            while len(data) <= INFO_MAX_BYTES and (more := await resp.content.read(16384)):
                data += more
            if len(data) > INFO_MAX_BYTES:
                resp.close()  # not the agent's: do not read on
                raise ValueError("agent /info body too large")
        return json.loads(data)

    def _tell(self, before: Route, after: Route) -> None:
        if after.url is None and not self._told_none:
            self._told_none = True
            log.error(
                "the agent at %s (version %s) lists no EVP proxy (%s or %s) in "
                "its /info: evaluations are counted as agent_no_evp_proxy and not sent. "
                "Enable the agent's EVP proxy (evp_proxy_config.enabled) or upgrade it.",
                self.endpoint.display if self.endpoint.unix_socket else _base(self.endpoint),
                after.agent_version,
                V4,
                V2,
            )
        elif after.url is not None and after.discovered and self._told_none:
            self._told_none = False
            log.info("the agent now lists an EVP proxy; posting to %s", after.display)
        elif after.url != before.url:
            log.debug("posting to %s", after.display)


def _base(endpoint: Endpoint) -> str:
    return _with_path(endpoint.display, "")
