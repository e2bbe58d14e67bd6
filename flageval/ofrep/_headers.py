"""HTTP header rules: ``OFREP_HEADERS`` parsing (the ADR-0007 amendment), checks on
configured headers, whether a value a server handed back may go into a header, and
scrubbing configured values out of what a server says.

No message here ever contains a header's value or anything a user wrote before its
first ``=``: ``Authorization: Bearer SECRET`` written without ``=`` is a whole secret.
Entries are named by their position (1 for the first) instead. A server may echo our
credentials in its error text; `Scrubber` removes them before that text is logged,
raised or emitted.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote

# RFC 9110 token characters: what a header name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Visible ASCII, space and tab: all a value we send back (ETag, Last-Event-ID) may hold.
_SENDABLE = re.compile(r"[\t\x20-\x7e]*")
#: A value a server hands back (ETag, SSE id) longer than this is not sent back: servers
#: refuse request headers of a few kB (431), which would fail every later request.
MAX_ECHOED_VALUE_CHARS = 1024
#: Malformed OFREP_HEADERS entries each said in a line of their own; the rest, counted.
MAX_SKIP_WARNINGS = 10


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a header name, or None. Never quotes the name."""
    if not name:
        return "the name is empty"
    if _TOKEN.fullmatch(name) is None:
        return "the name has a character a header name cannot have (space, ':', '=', ...)"
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot be a configured header's value, or None."""
    if any(c in value for c in "\r\n\0"):
        return "the value contains a line break or NUL"
    return None


def parse_headers(raw: str, setting: str, log: logging.Logger) -> dict[str, str]:
    """``OFREP_HEADERS`` by the ADR-0007 amendment: URL-decode the whole string, split on
    commas, split each entry on its first ``=``, trim both sides. A malformed entry is
    skipped with one warning naming its position and the reason (the first
    MAX_SKIP_WARNINGS; one more line counts the rest); never raises. Empty
    entries (``a=1,,b=2,``) are skipped silently."""
    headers: dict[str, str] = {}
    skipped = 0
    for position, entry in enumerate(unquote(raw).split(","), start=1):
        if not entry.strip():
            continue
        name, sep, value = entry.partition("=")
        name, value = name.strip(), value.strip()
        problem = "it has no '='" if not sep else name_problem(name) or value_problem(value)
        if problem is not None:
            skipped += 1
            if skipped <= MAX_SKIP_WARNINGS:  # a value of a million commas: not a million lines
                log.warning("%s: entry %d skipped: %s", setting, position, problem)
            continue
        headers[name] = value
    if skipped > MAX_SKIP_WARNINGS:
        log.warning("%s: %d more malformed entries skipped", setting, skipped - MAX_SKIP_WARNINGS)
    return headers


def check_headers(headers: object, setting: str) -> dict[str, str]:
    """Headers given as an argument: a mapping of strings, each valid; else ValueError
    naming the setting and the entry's position (never its name or value)."""
    if not isinstance(headers, Mapping):
        raise ValueError(f"{setting} must be a mapping of header name to value")
    checked: dict[str, str] = {}
    for position, (name, value) in enumerate(headers.items(), start=1):
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"{setting}: names and values must be strings (entry {position})")
        problem = name_problem(name) or value_problem(value)
        if problem is not None:
            raise ValueError(f"{setting}: entry {position} is invalid: {problem}")
        checked[name] = value
    return checked


def sendable(value: str) -> bool:
    """Whether a value a server handed back may be sent back in a request header: every
    HTTP client refuses control characters there (aiohttp raises, so the request never
    leaves), and a very long one gets the request refused."""
    return len(value) <= MAX_ECHOED_VALUE_CHARS and _SENDABLE.fullmatch(value) is not None


def redacted(headers: Mapping[str, str]) -> dict[str, str]:
    """Names kept, every value hidden: any configured header may be a credential."""
    return dict.fromkeys(headers, "<redacted>")


#: Shorter pieces are not scrubbed: they would mangle ordinary words and numbers.
MIN_SCRUBBED_CHARS = 4
REDACTED = "<redacted>"


def _pieces(value: str) -> Iterable[str]:
    """``value``, each of its space-separated parts (``Bearer <token>``) but the scheme
    that leads a credential of several (not a secret), and, for a base64 part
    (``Basic``), the text it decodes to and that text's ``:`` parts."""
    yield value
    parts = value.split()
    for part in parts[1:] if len(parts) > 1 else parts:
        yield part
        try:
            decoded = base64.b64decode(part, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if decoded.isprintable():
            yield decoded
            yield from decoded.split(":")


class Scrubber:
    """Replaces every configured secret (header values, and the base URL's userinfo) in
    a text with ``<redacted>``: whole, and in the parts a server may echo alone."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str]) -> None:
        found = {p for s in secrets for p in _pieces(s) if len(p) >= MIN_SCRUBBED_CHARS}
        # Longest first: a whole value goes before the parts it contains.
        ordered = sorted(found, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)
