"""Provider settings, each declared once (a field of :class:`OFREPConfig`): constructor
arguments, ADR-0007's ``OFREP_*`` environment fallbacks, validation.

``flageval._settings`` loads them (argument, else variable, else default), as it does
the telemetry pipeline's, so the background loop never meets a bad value. An invalid
argument raises ``ValueError`` naming it (a programmer's error); an invalid environment
value with a safe default (timeout, cache mode, cache TTL) is logged once at ERROR
naming the variable and the default is used (an operator's typo must not stop the
application); a missing or invalid endpoint has no safe default and raises.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from yarl import URL

from flageval._common import redact_url
from flageval._settings import DAY_S, declared, load, report_once, setting

from ._diagnostics import logger
from ._headers import check_headers, parse_headers, redacted

ChangeDetection = Literal["sse", "polling", "none"]
CacheMode = Literal["local-cache-first", "network-first", "disabled"]

ENV_ENDPOINT = "OFREP_ENDPOINT"
ENV_HEADERS = "OFREP_HEADERS"
ENV_TIMEOUT_MS = "OFREP_TIMEOUT_MS"
ENV_CACHE_MODE = "OFREP_CACHE_MODE"
ENV_CACHE_DIR = "OFREP_CACHE_DIR"
ENV_CACHE_TTL_S = "OFREP_CACHE_TTL_S"
ENV_CACHE_KEY_PREFIX = "OFREP_CACHE_KEY_PREFIX"

DEFAULT_TIMEOUT_MS = 10_000
# A server process has no foreground to re-fetch on (ADR-0010's "no polling" is written
# for browsers and phones): without a usable stream it would never see a change. So it
# polls by default while no stream is held; 0 turns polling off.
DEFAULT_POLL_INTERVAL_S = 30.0
# ADR-0008: a provider closes idle streams after the server's inactivityDelaySec, and
# 120 s is the value the ADR itself uses when the server sends none.
DEFAULT_INACTIVITY_DELAY_S = 120.0
# flagd sends a keep-alive comment every 30 s; twice that tolerates one lost heartbeat.
DEFAULT_SSE_READ_TIMEOUT_S = 60.0
DEFAULT_RECONNECT_MIN_S = 0.5
DEFAULT_RECONNECT_MAX_S = 30.0
DEFAULT_RETRY_MIN_S = 1.0
DEFAULT_RETRY_MAX_S = 60.0
# At the default backoff (delays of at most 0.5, 1, 2, 4, 8 s) five reconnects fail first,
# and a handler still hears of a dead stream within half a minute.
DEFAULT_STALE_AFTER_S = 30.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0
# The reference JS provider's window: one change announced on two streams, or repeated,
# lands within it; and a change is still served within ~60 ms on loopback.
DEFAULT_EVENT_DEBOUNCE_S = 0.05
# The ceiling under an event flood: at most 4 event-triggered fetches a second, and no
# burst postpones its fetch longer than this.
DEFAULT_EVENT_FETCH_INTERVAL_S = 0.25
DEFAULT_CACHE_MODE: CacheMode = "local-cache-first"
# ADR-0009 names DevCycle's 30 days as the reference TTL.
DEFAULT_CACHE_TTL_S = 30 * 24 * 3600.0
CACHE_DIR_NAME = "flageval-ofrep"

BULK_PATH = "/ofrep/v1/evaluate/flags"


def default_cache_dir(env: Mapping[str, str]) -> Path | None:
    """$XDG_CACHE_HOME/flageval-ofrep (an absolute XDG_CACHE_HOME only, as the XDG spec
    says), else ~/.cache/flageval-ofrep; None when there is no home directory."""
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / CACHE_DIR_NAME
    try:
        return Path.home() / ".cache" / CACHE_DIR_NAME
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


#: The floor of every period the provider keeps (polling, reconnects, retries, the event
#: fetch ceiling): nothing it does repeats more than 100 times a second.
FLOOR_S = 0.01


def _url(raw: str) -> URL:
    """An absolute http(s) URL with no query or fragment; ValueError never quotes it (a
    password may be in it)."""
    try:
        url = URL(raw.strip())
    except (TypeError, ValueError):
        # yarl's message quotes the URL, and with it any password: not echoed.
        raise ValueError("is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http(s) URL")
    if url.query_string or url.fragment:
        raise ValueError("must not carry a query string or fragment")
    return url


def _url_argument(value: object, name: str) -> URL:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got a {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} is required (argument or {ENV_ENDPOINT})")
    try:
        return _url(value)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None


def _path_argument(value: object, name: str) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise ValueError(f"{name} must be a path, got a {type(value).__name__}")
    return Path(value)


def _path(raw: str) -> Path | None:
    return Path(raw.strip()) if raw.strip() else None


def _headers(raw: str) -> dict[str, str]:
    return parse_headers(raw, ENV_HEADERS, logger)


def _seconds(default: float | None, doc: str, floor: float = 0.0, **spec: Any) -> Any:
    """A duration waited on: at most a day; above 0, or at least ``floor``."""
    return setting(default, doc, minimum=floor, inclusive=floor > 0, maximum=DAY_S, **spec)


@dataclass(frozen=True, slots=True, repr=False)
class OFREPConfig:
    """Validated settings, one field per constructor argument. Built by
    :func:`load_config`; immutable afterwards. Its repr hides every header value and
    the base URL's userinfo."""

    base_url: URL = setting(
        doc="the server's URL before /ofrep/v1/...",
        env=ENV_ENDPOINT,
        parse=_url,
        check=_url_argument,
        secret=True,
        default_text="required",
    )
    headers: Mapping[str, str] = setting(
        doc="sent with every request",
        env=ENV_HEADERS,
        parse=_headers,
        check=check_headers,
        secret=True,
        factory=dict,
        default_text="none",
    )
    timeout_ms: int = setting(
        DEFAULT_TIMEOUT_MS, "per request", env=ENV_TIMEOUT_MS, maximum=DAY_S * 1000
    )
    change_detection: ChangeDetection = setting("sse", "how changes are noticed")
    poll_interval_s: float = _seconds(
        DEFAULT_POLL_INTERVAL_S,
        "polling period while no stream is advertised or held (0: off)",
        FLOOR_S,
        zero=True,
    )
    inactivity_delay_s: float | None = _seconds(
        None,
        "idle time after which streams and polling pause",
        FLOOR_S,
        default_text="the smallest inactivityDelaySec of the streams, else 120",
    )
    sse_read_timeout_s: float = _seconds(
        DEFAULT_SSE_READ_TIMEOUT_S, "a stream with no byte for this long is dead"
    )
    reconnect_min_s: float = _seconds(
        DEFAULT_RECONNECT_MIN_S, "stream reconnect backoff, first delay", FLOOR_S
    )
    reconnect_max_s: float = _seconds(
        DEFAULT_RECONNECT_MAX_S, "stream reconnect backoff, longest delay", FLOOR_S
    )
    retry_min_s: float = _seconds(
        DEFAULT_RETRY_MIN_S, "backoff after a failed fetch, first delay", FLOOR_S
    )
    retry_max_s: float = _seconds(
        DEFAULT_RETRY_MAX_S, "backoff after a failed fetch, longest delay", FLOOR_S
    )
    stale_after_s: float = _seconds(
        DEFAULT_STALE_AFTER_S, "how long change detection may be lost before PROVIDER_STALE"
    )
    shutdown_timeout_s: float = _seconds(
        DEFAULT_SHUTDOWN_TIMEOUT_S, "what shutdown() may take overall"
    )
    event_debounce_s: float = setting(
        DEFAULT_EVENT_DEBOUNCE_S,
        "trailing window for refetchEvaluation events",
        inclusive=True,
        maximum=DAY_S,
    )
    event_fetch_interval_s: float = _seconds(
        DEFAULT_EVENT_FETCH_INTERVAL_S, "at most one event-triggered fetch per interval", FLOOR_S
    )
    cache_mode: CacheMode = setting(
        DEFAULT_CACHE_MODE, "persisted evaluations (ADR-0009)", env=ENV_CACHE_MODE
    )
    cache_dir: Path | None = setting(
        None,
        "where the entry file lives",
        env=ENV_CACHE_DIR,
        parse=_path,
        check=_path_argument,
        default_from=default_cache_dir,
        default_text="$XDG_CACHE_HOME/flageval-ofrep",
    )
    # Compared with ages only, never waited on: no ceiling.
    cache_ttl_s: float = setting(
        DEFAULT_CACHE_TTL_S, "an older entry is a miss", env=ENV_CACHE_TTL_S
    )
    cache_key_prefix: str | None = setting(
        None, "separates providers that share one directory", env=ENV_CACHE_KEY_PREFIX
    )

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000.0

    @property
    def bulk_url(self) -> URL:
        # The base URL is the part before /ofrep (a path prefix is kept).
        return self.base_url.with_path(self.base_url.path.rstrip("/") + BULK_PATH)

    def __repr__(self) -> str:
        shown: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["base_url"] = redact_url(self.base_url)
        shown["headers"] = redacted(self.headers)
        return "OFREPConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    __str__ = __repr__


#: The constructor's settings, in order (OFREPProvider's signature names them again, and
#: a test keeps the two equal).
SETTINGS: tuple[str, ...] = tuple(d.name for d in declared(OFREPConfig))


def load_config(environ: Mapping[str, str] | None = None, **arguments: Any) -> OFREPConfig:
    """Arguments (None: not given) win over the environment; the environment wins over
    defaults. ValueError naming the first unusable argument, or the endpoint."""
    env = os.environ if environ is None else environ
    loaded = load(OFREPConfig, arguments, env)
    values = loaded.values
    for problem in loaded.problems:
        if problem.name == "base_url":
            raise ValueError(str(problem))  # no safe default: another server
        report_once(
            logger,
            problem.var,
            problem.raw,
            f"{problem}; using the default {values[problem.name]!r}",
        )
    if "base_url" not in values:
        raise ValueError(f"base_url is required (argument or {ENV_ENDPOINT})")
    url = values["base_url"]
    if (url.user or url.password) and any(n.lower() == "authorization" for n in values["headers"]):
        # aiohttp would refuse every request late; which one was meant cannot be guessed.
        raise ValueError(
            "base_url carries credentials and an Authorization header is configured: "
            "give only one of them"
        )
    if values["change_detection"] == "polling" and values["poll_interval_s"] == 0:
        raise ValueError('poll_interval_s must be > 0 when change_detection="polling"')
    for low, high in (("reconnect_min_s", "reconnect_max_s"), ("retry_min_s", "retry_max_s")):
        if values[high] < values[low]:
            raise ValueError(f"{high} must be >= {low}")
    return OFREPConfig(**values)
