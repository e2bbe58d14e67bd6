"""What a usable URL, host name and text of the pipeline's settings are (the rules
flageval._config declares its settings with; ValueError says what was expected)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ._common import quote, redact_url

_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def utf8_text(text: str) -> str | None:
    """Why ``text`` cannot go into a body (UTF-8 on the wire), or None. An undecodable
    byte from the environment arrives as a lone surrogate and would fail every post."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 text"
    return None


def service_name(text: str) -> str | None:
    return "must be a non-empty string" if not text else utf8_text(text)


def site_name(text: str) -> str | None:
    return None if is_host(text) else "must be a site's host name (as datadoghq.eu)"


def check_url(label: str, url: object, *, unix: bool) -> None:
    """ValueError naming ``label`` unless ``url`` is an http(s) URL with a host (or, when
    ``unix``, unix:// with an absolute socket path). The URL is shown without its
    credentials, query or fragment, and by a short prefix at most."""
    kinds = "an http://, https:// or unix:// URL" if unix else "an http:// or https:// URL"
    if not isinstance(url, str):
        raise ValueError(f"{label} must be {kinds}, got a {type(url).__name__}")
    shown = quote(redact_url(url))
    if unix and url.startswith("unix://"):
        if not url[len("unix://") :].startswith("/"):
            raise ValueError(
                f"{label} must be {kinds} (unix:// takes an absolute socket path, as "
                f"unix:///var/run/datadog/apm.socket), got {shown}"
            )
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(
            f"{label} must be {kinds}, got {shown} (its host or port is invalid)"
        ) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{label} must be {kinds} with a host, got {shown}")


def is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return len(host) <= 253 and _HOST.fullmatch(host) is not None
    return True
