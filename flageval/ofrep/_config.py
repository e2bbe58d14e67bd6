"""Provider settings: constructor arguments, ADR-0007 environment fallbacks, validation.

Everything is checked once, here, so the background loop never meets a bad value. An
invalid argument raises ``ValueError`` naming it (a programmer's error); an invalid
environment value with a safe default (timeout, cache mode, cache TTL) is logged at
ERROR naming the variable and the default is used (an operator's typo must not stop the
application); a missing or invalid endpoint has no safe default and raises.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, TypeVar

from yarl import URL

from flageval._common import check_number, redact_url

from ._diagnostics import logger
from ._headers import check_headers, parse_headers, redacted

T = TypeVar("T")

ChangeDetection = Literal["sse", "polling", "none"]
CHANGE_DETECTIONS: tuple[ChangeDetection, ...] = ("sse", "polling", "none")
CacheMode = Literal["local-cache-first", "network-first", "disabled"]
CACHE_MODES: tuple[CacheMode, ...] = ("local-cache-first", "network-first", "disabled")

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


@dataclass(frozen=True, slots=True, repr=False)
class OFREPConfig:
    """Validated settings. Built by :func:`load_config`; immutable afterwards. Its repr
    hides every header value and the base URL's userinfo."""

    base_url: URL
    headers: Mapping[str, str]
    timeout_s: float
    change_detection: ChangeDetection
    poll_interval_s: float
    inactivity_delay_s: float | None
    sse_read_timeout_s: float
    reconnect_min_s: float
    reconnect_max_s: float
    retry_min_s: float
    retry_max_s: float
    stale_after_s: float
    shutdown_timeout_s: float
    event_debounce_s: float
    event_fetch_interval_s: float
    cache_mode: CacheMode
    cache_dir: Path | None  # None: no usable directory (caching is then off)
    cache_ttl_s: float
    cache_key_prefix: str | None

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


def _base_url(raw: str | None) -> URL:
    if raw is None or not raw.strip():
        raise ValueError(f"base_url is required (argument or {ENV_ENDPOINT})")
    try:
        url = URL(raw.strip())
    except (TypeError, ValueError):
        # yarl's message quotes the URL, and with it any password: not echoed.
        raise ValueError("base_url is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("base_url must be an absolute http(s) URL")
    if url.query_string or url.fragment:
        raise ValueError("base_url must not carry a query string or fragment")
    return url


def load_config(
    *,
    base_url: str | None,
    headers: Mapping[str, str] | None,
    timeout_ms: int | None,
    change_detection: str,
    poll_interval_s: float,
    inactivity_delay_s: float | None,
    sse_read_timeout_s: float,
    reconnect_min_s: float,
    reconnect_max_s: float,
    retry_min_s: float,
    retry_max_s: float,
    stale_after_s: float,
    shutdown_timeout_s: float,
    event_debounce_s: float = DEFAULT_EVENT_DEBOUNCE_S,
    event_fetch_interval_s: float = DEFAULT_EVENT_FETCH_INTERVAL_S,
    cache_mode: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_ttl_s: float | None = None,
    cache_key_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> OFREPConfig:
    """Arguments win over the environment; the environment wins over defaults."""
    env = os.environ if environ is None else environ

    url = _base_url(base_url if base_url is not None else env.get(ENV_ENDPOINT))

    if headers is None:
        resolved_headers = parse_headers(env.get(ENV_HEADERS, ""), ENV_HEADERS, logger)
    else:
        resolved_headers = check_headers(headers, "headers")

    if (url.user or url.password) and any(n.lower() == "authorization" for n in resolved_headers):
        # aiohttp would refuse every request late; which one was meant cannot be guessed.
        raise ValueError(
            "base_url carries credentials and an Authorization header is configured: "
            "give only one of them"
        )

    if timeout_ms is None:
        timeout = _from_env(env, ENV_TIMEOUT_MS, _positive_int_ms, float(DEFAULT_TIMEOUT_MS))
    else:
        timeout = float(check_number(timeout_ms, "timeout_ms"))

    if change_detection not in CHANGE_DETECTIONS:
        raise ValueError(
            f"change_detection must be one of {', '.join(CHANGE_DETECTIONS)}; "
            f"got {change_detection!r}"
        )
    mode: ChangeDetection = change_detection
    poll = float(check_number(poll_interval_s, "poll_interval_s", inclusive=True))
    if mode == "polling" and poll == 0:
        raise ValueError('poll_interval_s must be > 0 when change_detection="polling"')

    inactivity = (
        None
        if inactivity_delay_s is None
        else float(check_number(inactivity_delay_s, "inactivity_delay_s"))
    )
    rmin = float(check_number(reconnect_min_s, "reconnect_min_s"))
    rmax = float(check_number(reconnect_max_s, "reconnect_max_s"))
    if rmax < rmin:
        raise ValueError("reconnect_max_s must be >= reconnect_min_s")
    emin = float(check_number(retry_min_s, "retry_min_s"))
    emax = float(check_number(retry_max_s, "retry_max_s"))
    if emax < emin:
        raise ValueError("retry_max_s must be >= retry_min_s")

    mode_c, dir_c, ttl_c, prefix_c = _cache_settings(
        env, cache_mode, cache_dir, cache_ttl_s, cache_key_prefix
    )
    return OFREPConfig(
        base_url=url,
        headers=resolved_headers,
        timeout_s=timeout / 1000.0,
        change_detection=mode,
        poll_interval_s=poll,
        inactivity_delay_s=inactivity,
        sse_read_timeout_s=float(check_number(sse_read_timeout_s, "sse_read_timeout_s")),
        reconnect_min_s=rmin,
        reconnect_max_s=rmax,
        retry_min_s=emin,
        retry_max_s=emax,
        stale_after_s=float(check_number(stale_after_s, "stale_after_s")),
        shutdown_timeout_s=float(check_number(shutdown_timeout_s, "shutdown_timeout_s")),
        event_debounce_s=float(check_number(event_debounce_s, "event_debounce_s", inclusive=True)),
        event_fetch_interval_s=float(
            check_number(event_fetch_interval_s, "event_fetch_interval_s", inclusive=True)
        ),
        cache_mode=mode_c,
        cache_dir=dir_c,
        cache_ttl_s=ttl_c,
        cache_key_prefix=prefix_c,
    )


def _cache_settings(
    env: Mapping[str, str],
    mode: str | None,
    directory: str | os.PathLike[str] | None,
    ttl_s: float | None,
    prefix: str | None,
) -> tuple[CacheMode, Path | None, float, str | None]:
    """ADR-0009's settings; each argument falls back to its OFREP_CACHE_* variable."""
    if mode is None:
        checked_mode = _from_env(env, ENV_CACHE_MODE, _cache_mode, DEFAULT_CACHE_MODE)
    else:
        checked_mode = _cache_mode(mode, "cache_mode")
    if ttl_s is None:
        ttl = _from_env(env, ENV_CACHE_TTL_S, _positive_seconds, DEFAULT_CACHE_TTL_S)
    else:
        ttl = float(check_number(ttl_s, "cache_ttl_s"))
    if prefix is None:
        prefix = env.get(ENV_CACHE_KEY_PREFIX) or None
    elif not isinstance(prefix, str):
        raise ValueError("cache_key_prefix must be a string")
    if directory is None:
        directory = env.get(ENV_CACHE_DIR, "").strip() or None
    path = Path(directory) if directory is not None else default_cache_dir(env)
    return checked_mode, path, ttl, prefix


def _from_env(env: Mapping[str, str], var: str, parse: Callable[[str, str], T], default: T) -> T:
    """``var``'s value, or ``default`` when unset; an unusable value is logged at ERROR,
    naming the variable, and the default used."""
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        return parse(raw, var)
    except ValueError as exc:
        logger.error("%s; using the default %r", exc, default)
        return default


def _positive_int_ms(raw: str, name: str) -> float:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer number of ms > 0") from None
    return float(check_number(value, name))


def _positive_seconds(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds > 0") from None
    return float(check_number(value, name))


def _cache_mode(raw: str, name: str) -> CacheMode:
    for mode in CACHE_MODES:
        if raw == mode:
            return mode
    raise ValueError(f"{name} must be one of {', '.join(CACHE_MODES)}, got {raw!r}")


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
