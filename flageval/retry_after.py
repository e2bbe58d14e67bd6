"""``Retry-After`` parsing, shared by the intake transport and the OFREP provider."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime


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
