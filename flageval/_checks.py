"""What a usable value of each setting is: the checks keywords must pass (ValueError
naming the setting) and the parsing of environment text (ValueError saying what was
expected; flageval._config names the variable and decides what happens)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from ._common import check_number, redact_url

#: flageval's own booleans: a spelling outside these is an error (default kept).
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

#: name: (variable, integer, minimum, minimum allowed)
NUMBERS: dict[str, tuple[str, bool, float, bool]] = {
    "flush_interval_s": ("FLAGEVAL_FLUSH_INTERVAL_S", False, 0, False),
    "drain_interval_s": ("FLAGEVAL_DRAIN_INTERVAL_S", False, 0, False),
    "request_timeout_s": ("FLAGEVAL_REQUEST_TIMEOUT_S", False, 0, False),
    "shutdown_timeout_s": ("FLAGEVAL_SHUTDOWN_TIMEOUT_S", False, 0, True),
    "retry_backoff_s": ("FLAGEVAL_RETRY_BACKOFF_S", False, 0, True),
    "queue_size": ("FLAGEVAL_QUEUE_SIZE", True, 0, False),
    "max_full_buckets": ("FLAGEVAL_MAX_FULL_BUCKETS", True, 0, False),
    "max_buckets_per_flag": ("FLAGEVAL_MAX_BUCKETS_PER_FLAG", True, 0, False),
    "max_degraded_buckets": ("FLAGEVAL_MAX_DEGRADED_BUCKETS", True, 0, False),
    "memory_budget_bytes": ("FLAGEVAL_MEMORY_BUDGET_BYTES", True, 0, False),
    "retry_buffer_bytes": ("FLAGEVAL_RETRY_BUFFER_BYTES", True, 0, False),
    "max_retries": ("FLAGEVAL_MAX_RETRIES", True, 0, True),
    # A body must hold at least its envelope and one small row.
    "max_body_bytes": ("FLAGEVAL_MAX_BODY_BYTES", True, 1024, True),
}
BOOLS = {
    "agentless": "FLAGEVAL_AGENTLESS",
    "full_data_default": "FLAGEVAL_FULL_DATA_DEFAULT",
    "verify_tls": "FLAGEVAL_VERIFY_TLS",
}
TEXTS = {
    "api_key": "DD_API_KEY",
    "site": "DD_SITE",
    "intake_url": "FLAGEVAL_INTAKE_URL",
    "service": "DD_SERVICE",
    "env": "DD_ENV",
    "version": "DD_VERSION",
}

_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def expect(integer: bool, minimum: float, inclusive: bool) -> str:
    return f"{'an integer' if integer else 'a number'} {'>=' if inclusive else '>'} {minimum:g}"


def check_field(name: str, value: Any) -> None:
    """ValueError naming ``name`` when ``value`` cannot be used for it (one field)."""
    if name in NUMBERS:
        _, integer, minimum, inclusive = NUMBERS[name]
        check_number(value, name, minimum=minimum, inclusive=inclusive, integer=integer)
    elif name == "enabled" or name in BOOLS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")
    elif name == "api_key":
        if value is not None and not isinstance(value, str):
            raise ValueError(f"api_key must be a string, got a {type(value).__name__}")
    elif name == "service" and not (isinstance(value, str) and value):
        raise ValueError(f"service must be a non-empty string, got {value!r}")
    elif name == "site" and not (isinstance(value, str) and is_host(value)):
        raise ValueError(f"site must be a site's host name (as datadoghq.eu), got {value!r}")
    elif name in {"env", "version", "intake_url", "agent_url"} and not (
        value is None or isinstance(value, str)
    ):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if name in {"service", "env", "version"} and value is not None and not _utf8(value):
        # They go into every body as UTF-8: an undecodable byte from the environment
        # (a lone surrogate here) would fail every post.
        raise ValueError(f"{name} is not valid UTF-8 text: {value!r}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_url(label: str, url: object, *, unix: bool) -> None:
    kinds = "an http://, https:// or unix:// URL" if unix else "an http:// or https:// URL"
    if not isinstance(url, str):
        raise ValueError(f"{label} must be {kinds}, got a {type(url).__name__}")
    if unix and url.startswith("unix://"):
        if not url[len("unix://") :].startswith("/"):
            raise ValueError(
                f"{label} must be {kinds} (unix:// takes an absolute socket path, as "
                f"unix:///var/run/datadog/apm.socket), got {redact_url(url)!r}"
            )
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(
            f"{label} must be {kinds}, got {redact_url(url)!r} (its host or port is invalid)"
        ) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{label} must be {kinds} with a host, got {redact_url(url)!r}")


def parse_env(name: str, raw: str) -> Any:
    """The value of setting ``name`` from its variable's text; ValueError saying what
    was expected (the caller names the variable and shows the text)."""
    text = raw.strip()
    if name in NUMBERS:
        _, integer, minimum, inclusive = NUMBERS[name]
        wanted = f"must be {expect(integer, minimum, inclusive)}"
        try:
            value = int(text) if integer else float(text)
            return check_number(value, name, minimum=minimum, inclusive=inclusive, integer=integer)
        except ValueError:
            raise ValueError(wanted) from None
    if name in BOOLS:
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("must be one of true, false, 1, 0, yes, no, on, off")
    if name in {"service", "env", "version"} and not _utf8(text):
        raise ValueError("is not valid UTF-8 text")
    if name == "site" and not is_host(text):
        raise ValueError("must be a site's host name (as datadoghq.eu)")
    return text


def is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return len(host) <= 253 and _HOST.fullmatch(host) is not None
    return True
