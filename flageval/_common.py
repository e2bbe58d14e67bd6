"""Small helpers both halves of the package share: one of each.

Backoff with jitter, ``Retry-After`` parsing, log-safe URLs, number validation and
rate-limited logging.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any


def backoff_s(attempt: int, base_s: float, cap_s: float, spread: float = 1.0) -> float:
    """The delay before retry ``attempt`` (0 for the first): ``base_s`` doubling up to
    ``cap_s``, drawn uniformly from the top ``spread`` of that ceiling (1.0: full jitter,
    anywhere in [0, ceiling]; 0.5: the upper half, so a retry never comes too soon)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 30))
    return random.uniform(ceiling * (1.0 - spread), ceiling)


def parse_retry_after(value: str | None, cap_s: float, now: float | None = None) -> float | None:
    """Seconds to wait (at most ``cap_s``) from delta-seconds, an HTTP date or an ISO
    8601 date-time (the OFREP openapi example: ``2024-02-07T12:00:00Z``); a date in the
    past gives 0; None when the header is missing or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # isascii(): str.isdigit() is also true for "²" and other digits int() refuses.
    if text.isascii() and text.isdigit():
        # int() refuses strings of over 4,300 digits; a value that long is past any cap.
        digits = text.lstrip("0") or "0"
        if len(digits) > 12:
            return cap_s
        return min(float(int(digits)), cap_s)
    when: datetime | None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
    if when.tzinfo is None:
        # HTTP dates are GMT by definition; a zone-less ISO value is read the same way.
        when = when.replace(tzinfo=UTC)
    wall_now = time.time() if now is None else now
    return min(max(0.0, when.timestamp() - wall_now), cap_s)


def redact_url(url: object) -> str:
    """A URL reduced to scheme://host[:port]/path: no userinfo, query or fragment, the
    only form of a URL that may reach a log or an error text. Plain string work, so any
    text comes out as itself minus its secrets (``localhost:8126`` stays that, a URL in
    the wrong variable stays readable), never "unparseable"."""
    text = str(url)
    for mark in "?#":
        text = text.partition(mark)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    # Everything before the last "@" is userinfo (a password may hold "/" or ":").
    rest = rest.rpartition("@")[2]
    shown = f"{scheme}{sep}{rest}"
    # Control characters would let a value forge log lines.
    return "".join(c if c.isprintable() else "?" for c in shown)


def check_number(
    value: object,
    name: str,
    *,
    minimum: float = 0.0,
    inclusive: bool = False,
    integer: bool = False,
    maximum: float | None = None,
    zero: bool = False,
) -> Any:
    """``value`` if it is a finite number (an int when ``integer``, else returned as a
    float) above ``minimum`` (or equal to it when ``inclusive``), at most ``maximum``, or
    0 when ``zero``; else ValueError naming ``name``, however large the number (an int
    compares with a float exactly; converting it could overflow)."""
    number: float | None = None  # an int stays an int: it compares with floats exactly
    if isinstance(value, int) and not isinstance(value, bool):
        number = value if integer else _float(value)
    elif isinstance(value, float) and not integer:
        number = value
    if number is not None and (
        (zero and number == 0)
        or (
            (integer or math.isfinite(number))
            and (number > minimum or (inclusive and number == minimum))
            and (maximum is None or number <= maximum)
        )
    ):
        return number
    kind = "an integer" if integer else "a number"
    bounds = describe_bounds(minimum, inclusive, maximum, zero=zero)
    raise ValueError(f"{name} must be {kind} {bounds}, got {shown(value)}")


def _float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int past any float: out of every range
        return math.inf


def describe_bounds(
    minimum: float, inclusive: bool, maximum: float | None = None, *, zero: bool = False
) -> str:
    """``> 0``, ``>= 0.001 and <= 86400``, ``0, or >= 0.01 ...``: what check_number takes."""
    text = f"{'>=' if inclusive else '>'} {_number(minimum)}"
    if maximum is not None:
        text += f" and <= {_number(maximum)}"
    return f"0, or {text}" if zero else text


def _number(x: float) -> str:
    if x >= 10**6 and x == 10 ** round(math.log10(x)):
        return f"10^{round(math.log10(x))}"
    return str(int(x)) if x == int(x) else f"{x:g}"


#: The most of a bad value an error text or a log line quotes.
QUOTE_CHARS = 64


def quote(text: str) -> str:
    """``text`` as repr() shows it (control characters escaped, so no forged log line),
    cut to its first QUOTE_CHARS characters when longer, with its length."""
    if len(text) <= QUOTE_CHARS:
        return repr(text)
    return f"{text[:QUOTE_CHARS]!r}... ({len(text):,} characters)"


def shown(value: object) -> str:
    """A bad argument as an error text may show it: an int of any size (repr() refuses
    over 4,300 digits), other values by a short prefix of their repr()."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "..."


class RateLimitedLog:
    """Log at most once per ``interval_s`` for each key (thread-safe); the next record
    for that key says how many were swallowed meanwhile."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> bool:
        """Log ``msg % args`` at WARNING unless ``key`` was logged within the interval."""
        return self.log(logging.WARNING, key, msg, *args)

    def log(self, level: int, key: str, msg: str, *args: Any) -> bool:
        """Log at ``level`` unless ``key`` was logged within the interval."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, suppressed)
        self._logger.log(level, msg, *args)
        return True
