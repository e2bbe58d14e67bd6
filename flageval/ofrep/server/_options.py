"""The server's settings, declared once: each with its default, its check and its flag.

Keywords of :func:`flageval.ofrep.server.create_app` and the command's options are the
same names (``--cache-capacity`` is ``cache_capacity``). A value that cannot be used
raises ValueError naming it, at construction, before any socket is opened. Credentials
are never taken from the command line (other users can read it): the command reads
them from :data:`ENV_API_KEYS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from yarl import URL

from flageval._common import check_number

#: Accepted credentials, comma-separated: each one as ``Authorization: Bearer <key>`` or
#: as ``X-API-Key: <key>``. Unset or empty: no authentication.
ENV_API_KEYS = "FLAGEVAL_OFREP_SERVER_API_KEYS"

SSE_PATH = "/ofrep/v1/sse"
#: flagd serves OFREP on this port; the same default avoids a second convention.
DEFAULT_PORT = 8016


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ServerOptions:
    """Validated settings (see the module docstring); ``repr`` never shows a key."""

    flags: tuple[Path, ...]
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # How often the flag files are checked (size, mtime, inode; content every 10th).
    poll_interval_s: float = 1.0
    # Evaluated bulk bodies kept per (flag set, context): entries, and bytes in all.
    cache_capacity: int = 1000
    cache_max_bytes: int = 64 * 1024 * 1024
    # A request body past this many bytes is refused (413) before it is parsed.
    max_body_bytes: int = 64 * 1024
    # An evaluation context nested deeper, or holding more values, is refused (400).
    max_context_depth: int = 8
    max_context_values: int = 2000
    api_keys: tuple[str, ...] = ()
    # Where clients reach the streams (scheme://host[:port]) when a proxy stands in front;
    # None: the endpoint form without origin (the client's own base URL).
    public_origin: str | None = None
    event_streams: bool = True
    inactivity_delay_s: int = 120
    # Shorter than inactivity_delay_s, and than a client's read timeout (60 s in flageval).
    keepalive_s: float = 30.0
    max_streams: int = 1000
    # A stream whose client does not take an event within this long is closed.
    stream_write_timeout_s: float = 5.0
    shutdown_timeout_s: float = 5.0
    # The command's access log (method, path, status, time; never the query or headers).
    access_log: bool = True

    def __post_init__(self) -> None:
        if not self.flags:
            raise ValueError("flags: at least one flag file is required")
        object.__setattr__(self, "flags", tuple(Path(p) for p in self.flags))
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("host must be a non-empty string")
        check_number(self.port, "port", minimum=0, inclusive=True, integer=True)
        if self.port > 65535:
            raise ValueError(f"port must be <= 65535, got {self.port!r}")
        check_number(self.poll_interval_s, "poll_interval_s", minimum=0.01, inclusive=True)
        check_number(self.cache_capacity, "cache_capacity", inclusive=True, integer=True)
        check_number(self.cache_max_bytes, "cache_max_bytes", inclusive=True, integer=True)
        check_number(
            self.max_body_bytes, "max_body_bytes", minimum=64, inclusive=True, integer=True
        )
        check_number(
            self.max_context_depth, "max_context_depth", minimum=1, inclusive=True, integer=True
        )
        check_number(
            self.max_context_values, "max_context_values", minimum=1, inclusive=True, integer=True
        )
        keys = tuple(self.api_keys)
        for key in keys:
            # The values themselves are never echoed.
            if not isinstance(key, str) or not key or not key.isprintable() or key != key.strip():
                raise ValueError(
                    "api_keys: every key must be a non-empty printable string "
                    "without surrounding spaces"
                )
        object.__setattr__(self, "api_keys", keys)
        if self.public_origin is not None:
            object.__setattr__(self, "public_origin", _origin(self.public_origin))
        check_number(
            self.inactivity_delay_s, "inactivity_delay_s", minimum=1, inclusive=True, integer=True
        )
        check_number(self.keepalive_s, "keepalive_s", minimum=0.01, inclusive=True)
        if self.keepalive_s >= self.inactivity_delay_s:
            raise ValueError(
                f"keepalive_s ({self.keepalive_s:g}) must be shorter than "
                f"inactivity_delay_s ({self.inactivity_delay_s})"
            )
        check_number(self.max_streams, "max_streams", inclusive=True, integer=True)
        check_number(
            self.stream_write_timeout_s, "stream_write_timeout_s", minimum=0.01, inclusive=True
        )
        check_number(self.shutdown_timeout_s, "shutdown_timeout_s", inclusive=True)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["api_keys"] = f"<{len(self.api_keys)} keys>"
        return "ServerOptions(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _origin(raw: object) -> str:
    """``scheme://host[:port]`` and nothing else (the ADR's ``origin``)."""
    if not isinstance(raw, str):
        raise ValueError("public_origin must be a string like https://flags.example.com")
    try:
        url = URL(raw.strip())
    except (TypeError, ValueError):
        raise ValueError("public_origin is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("public_origin must be an absolute http(s) origin")
    if url.user or url.password or url.path not in ("", "/") or url.query_string or url.fragment:
        raise ValueError(
            "public_origin must be scheme://host[:port] only (no path, query or credentials)"
        )
    return str(url.origin())


def api_keys_from_env(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The keys of :data:`ENV_API_KEYS`: split on commas, trimmed, empty entries skipped."""
    raw = (os.environ if env is None else env).get(ENV_API_KEYS, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def parser() -> argparse.ArgumentParser:
    """The command's options: one per setting but the credentials."""
    p = argparse.ArgumentParser(
        prog="python -m flageval.ofrep.server",
        description="An OFREP server evaluating flagd flag-definition files with flagd's "
        f"own evaluator. Credentials: {ENV_API_KEYS} (comma-separated).",
    )
    p.add_argument(
        "--flags",
        action="append",
        required=True,
        metavar="PATH",
        type=Path,
        help="a flagd flag-definition file (JSON); repeat for several (later files win)",
    )
    defaults = ServerOptions(flags=(Path("-"),))
    for field in dataclasses.fields(ServerOptions):
        if field.name in ("flags", "api_keys"):
            continue
        default = getattr(defaults, field.name)
        option = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(option, action=argparse.BooleanOptionalAction, default=default)
        else:
            kind: Any = type(default) if default is not None else str
            p.add_argument(option, type=kind, default=default, help=f"default: {default}")
    return p


def from_args(
    argv: Iterable[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerOptions:
    """Parse the command line (argparse exits with status 2 on a bad option or value)."""
    p = parser()
    args = vars(p.parse_args(None if argv is None else list(argv)))
    try:
        return ServerOptions(api_keys=api_keys_from_env(env), **args)
    except ValueError as err:
        p.error(str(err))
