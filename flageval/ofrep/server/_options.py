"""The server's settings, each declared once (a field of :class:`ServerOptions`), loaded
by ``flageval._settings`` as the other halves' are: the argument, else the variable,
else the default.

Keywords of :func:`flageval.ofrep.server.create_app` and the command's options are the
same names (``--cache-capacity`` is ``cache_capacity``). An argument that cannot be used
raises ValueError naming it, at construction, before any socket is opened. Credentials
are never taken from the command line (other users can read it): only from
:data:`ENV_API_KEYS`, or as an argument of ``create_app``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from yarl import URL

from flageval._settings import DAY_S, check_arguments, declared, load, setting

#: Accepted credentials, comma-separated: each one as ``Authorization: Bearer <key>`` or
#: as ``X-API-Key: <key>``. Unset or empty: no authentication.
ENV_API_KEYS = "FLAGEVAL_OFREP_SERVER_API_KEYS"

SSE_PATH = "/ofrep/v1/sse"
#: flagd serves OFREP on this port; the same default avoids a second convention.
DEFAULT_PORT = 8016
#: msgspec decodes no deeper than about a thousand levels; a limit past it means nothing.
_MAX_DEPTH = 1000


def _paths(value: object, name: str) -> tuple[Path, ...]:
    if isinstance(value, str | os.PathLike) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of paths")
    paths = tuple(value)
    if not paths or not all(isinstance(p, str | os.PathLike) and str(p) for p in paths):
        raise ValueError(f"{name}: at least one flag file is required, each a path")
    return tuple(Path(p) for p in paths)


def _keys(value: object, name: str) -> tuple[str, ...]:
    """Keys as given; the values themselves are never echoed."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings")
    keys = tuple(value)
    for key in keys:
        if not isinstance(key, str) or not key or not key.isprintable() or key != key.strip():
            raise ValueError(
                f"{name}: every key must be a non-empty printable string without surrounding spaces"
            )
    return keys


def _keys_from_env(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def _origin_problem(raw: str) -> str | None:
    """Why a public origin is unusable (None: usable); it must be scheme://host[:port]."""
    try:
        url = URL(raw.strip())
    except (TypeError, ValueError):
        return "is not a valid URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "must be an absolute http(s) origin"
    if url.user or url.password or url.path not in ("", "/") or url.query_string or url.fragment:
        return "must be scheme://host[:port] only (no path, query or credentials)"
    return None


def _host_problem(raw: str) -> str | None:
    return None if raw.strip() and raw.isprintable() else "must be a host name or an address"


def _seconds(default: float, doc: str, floor: float = 0.01) -> Any:
    return setting(default, doc, minimum=floor, inclusive=True, maximum=DAY_S)


def _count(default: int, doc: str, floor: int = 0, ceiling: float | None = None) -> Any:
    return setting(default, doc, minimum=floor, inclusive=True, maximum=ceiling)


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ServerOptions:
    """Validated settings (see the module docstring); ``repr`` never shows a key."""

    flags: tuple[Path, ...] = setting(
        doc="flagd flag files; a later one wins a key",
        parse=lambda raw: _paths(raw.split(os.pathsep), "flags"),
        check=_paths,
        default_text="required",
    )
    host: str = setting("127.0.0.1", "where to listen", rule=_host_problem)
    port: int = _count(DEFAULT_PORT, "where to listen (0: any free port)", ceiling=65535)
    poll_interval_s: float = _seconds(1.0, "how often the flag files are checked")
    cache_capacity: int = _count(1000, "evaluated answers kept, per flag set and context")
    cache_max_bytes: int = _count(64 * 1024 * 1024, "and their bytes in all, about")
    max_body_bytes: int = _count(64 * 1024, "a longer request body is refused (413)", 64)
    body_timeout_s: float = _seconds(10.0, "a body not received in this long is refused (408)")
    max_context_depth: int = _count(8, "a context nested deeper is refused", 1, _MAX_DEPTH)
    max_context_values: int = _count(2000, "a context holding more values is refused", 1)
    api_keys: tuple[str, ...] = setting(
        doc="accepted credentials (comma-separated in the variable)",
        env=ENV_API_KEYS,
        parse=_keys_from_env,
        check=_keys,
        secret=True,
        factory=tuple,
        default_text="none",
    )
    public_origin: str | None = setting(
        None, "the origin advertised for streams, behind a proxy", rule=_origin_problem
    )
    event_streams: bool = setting(True, "advertise and serve event streams")
    inactivity_delay_s: int = _count(120, "the inactivityDelaySec advertised", 1, DAY_S)
    keepalive_s: float = _seconds(30.0, "a comment on a quiet stream this often")
    max_streams: int = _count(1000, "open streams at most")
    stream_write_timeout_s: float = _seconds(
        5.0, "a client that does not take an event in this long is dropped"
    )
    shutdown_timeout_s: float = setting(
        5.0, "the graceful stop's bound", inclusive=True, maximum=DAY_S
    )
    access_log: bool = setting(True, "one line per request, never its query")

    def __post_init__(self) -> None:
        # Every field checked as an argument is, then what involves two of them.
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in check_arguments(ServerOptions, given).items():
            object.__setattr__(self, name, value)
        if self.public_origin is not None:
            object.__setattr__(self, "public_origin", str(URL(self.public_origin).origin()))
        if self.keepalive_s >= self.inactivity_delay_s:
            raise ValueError(
                f"keepalive_s ({self.keepalive_s:g}) must be shorter than "
                f"inactivity_delay_s ({self.inactivity_delay_s})"
            )

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["api_keys"] = f"<{len(self.api_keys)} keys>"
        return "ServerOptions(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **given: Any) -> ServerOptions:
        """Arguments (None: not given), else the environment, else the defaults."""
        loaded = load(cls, given, os.environ if environ is None else environ)
        if "flags" not in loaded.values:
            raise ValueError("flags: at least one flag file is required")
        return cls(**loaded.values)


def parser() -> argparse.ArgumentParser:
    """The command's options: one per setting but the credentials."""
    p = argparse.ArgumentParser(
        prog="python -m flageval.ofrep.server",
        description="An OFREP server evaluating flagd flag-definition files with flagd's "
        f"own evaluator. Credentials: {ENV_API_KEYS} (comma-separated).",
    )
    for d in declared(ServerOptions):
        option = "--" + d.name.replace("_", "-")
        if d.name == "api_keys":
            continue
        if d.name == "flags":
            p.add_argument(option, action="append", required=True, metavar="PATH", help=d.spec.doc)
        elif d.kind is bool:
            p.add_argument(
                option, action=argparse.BooleanOptionalAction, default=None, help=d.spec.doc
            )
        else:
            kind = str if d.kind is object else d.kind
            p.add_argument(
                option, type=kind, default=None, help=f"{d.spec.doc} (default: {d.default})"
            )
    return p


def from_args(
    argv: Iterable[str] | None = None, env: Mapping[str, str] | None = None
) -> ServerOptions:
    """Parse the command line (argparse exits with status 2 on a bad option or value)."""
    p = parser()
    args = vars(p.parse_args(None if argv is None else list(argv)))
    try:
        return ServerOptions.load(env, **args)
    except ValueError as err:
        p.error(str(err))
