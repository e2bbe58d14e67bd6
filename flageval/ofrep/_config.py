"""Provider settings: constructor arguments, ADR-0007 environment fallbacks, validation.

Everything is checked once, here, so the background loop never meets a bad value:
an invalid setting raises ``ValueError`` naming the setting (or environment variable).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from yarl import URL

from flageval._common import check_number

ChangeDetection = Literal["sse", "polling", "none"]
CHANGE_DETECTIONS: tuple[ChangeDetection, ...] = ("sse", "polling", "none")

ENV_ENDPOINT = "OFREP_ENDPOINT"
ENV_HEADERS = "OFREP_HEADERS"
ENV_TIMEOUT_MS = "OFREP_TIMEOUT_MS"

DEFAULT_TIMEOUT_MS = 10_000
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

BULK_PATH = "/ofrep/v1/evaluate/flags"


@dataclass(frozen=True, slots=True)
class OFREPConfig:
    """Validated settings. Built by :func:`load_config`; immutable afterwards."""

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

    @property
    def bulk_url(self) -> URL:
        # The base URL is the part before /ofrep (a path prefix is kept).
        return self.base_url.with_path(self.base_url.path.rstrip("/") + BULK_PATH)


def parse_headers(raw: str, setting: str = ENV_HEADERS) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (ADR-0007). Names and values are URL-decoded after splitting,
    so a value may carry an encoded ``,`` or ``=``. Empty items are skipped."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = unquote(name.strip())
        if not sep or not name:
            raise ValueError(f"{setting}: expected comma-separated name=value pairs")
        value = unquote(value.strip())
        _check_header(name, value, setting)
        headers[name] = value
    return headers


def _check_header(name: str, value: str, setting: str) -> None:
    # Never echo the value: it is usually a credential.
    if any(c in name for c in " \t\r\n:") or not name.isascii():
        raise ValueError(f"{setting}: invalid header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"{setting}: the value of header {name!r} contains a line break")


def _base_url(raw: str | None) -> URL:
    if raw is None or not raw.strip():
        raise ValueError(f"base_url is required (argument or {ENV_ENDPOINT})")
    try:
        url = URL(raw.strip())
    except (TypeError, ValueError) as exc:
        raise ValueError(f"base_url is not a valid URL: {exc}") from None
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
    environ: Mapping[str, str] | None = None,
) -> OFREPConfig:
    """Arguments win over the environment; the environment wins over defaults."""
    env = os.environ if environ is None else environ

    url = _base_url(base_url if base_url is not None else env.get(ENV_ENDPOINT))

    if headers is None:
        resolved_headers = parse_headers(env.get(ENV_HEADERS, ""))
    else:
        if not isinstance(headers, Mapping):
            raise ValueError("headers must be a mapping of header name to value")
        resolved_headers = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError("headers: names and values must be strings")
            _check_header(name, value, "headers")
            resolved_headers[name] = value

    if timeout_ms is None:
        raw_timeout = env.get(ENV_TIMEOUT_MS)
        if raw_timeout is None or not raw_timeout.strip():
            timeout = float(DEFAULT_TIMEOUT_MS)
        else:
            try:
                timeout = float(int(raw_timeout.strip()))
            except ValueError:
                raise ValueError(f"{ENV_TIMEOUT_MS} must be an integer number of ms") from None
            timeout = float(check_number(timeout, ENV_TIMEOUT_MS))
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
    )
