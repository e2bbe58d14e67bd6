"""Configuration: every setting, its environment variable, its default, its validation.

Each setting is a keyword argument of :class:`flageval.Telemetry`; a keyword left out
falls back to its environment variable, then to the default below.

* Keywords are the programmer's: a value that cannot be used raises ValueError naming
  the setting, at construction (caught in development).
* The environment is the operator's, and a typo there must never take the application
  down: an unusable value is logged once at ERROR, naming the variable and what was
  expected, and the default is used; where no default is safe (where to send the
  counts, agentless without a key) the pipeline turns itself off with that error.
* The killswitch is read first, by Datadog's convention (only ``true`` and ``1`` mean
  on): off means nothing else is read, validated or imported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit, urlunsplit

from ._checks import BOOLS, NUMBERS, TEXTS, check_field, check_url, is_host, parse_env
from ._common import redact_url
from ._service import infer_service

log = logging.getLogger("flageval")

KILLSWITCH_ENV = "DD_FLAGGING_EVALUATION_COUNTS_ENABLED"
INTAKE_PATH = "/evp_proxy/v2/api/v2/flagevaluation"
AGENTLESS_PATH = "/api/v2/flagevaluation"
MAX_BODY_BYTES = 5 * 1024 * 1024

#: Datadog's booleans (dd-trace-py's ``asbool``): these two mean on, anything else off.
_DD_ON = frozenset({"true", "1"})
_DD_OFF = frozenset({"false", "0", "no", "off"})  # off, and clearly meant so: no warning
_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _report(var: str, raw: str, message: str, level: int = logging.ERROR) -> None:
    """Log ``message`` about ``var`` once per process and value (a pipeline built per
    request must not log per request); bounded by the environment's own size."""
    with _reported_lock:
        if (var, raw) in _reported or len(_reported) >= 1024:
            return
        _reported.add((var, raw))
    log.log(level, "%s", message)


def enabled_from_env(env: Mapping[str, str]) -> bool:
    """The killswitch, by Datadog's convention: unset means on, ``true``/``1`` (any
    case) on, anything else off, with a warning when the spelling is not a known one."""
    raw = env.get(KILLSWITCH_ENV)
    if raw is None or not raw.strip():
        return True
    low = raw.strip().lower()
    if low in _DD_ON:
        return True
    if low not in _DD_OFF:
        _report(
            KILLSWITCH_ENV,
            raw,
            f"{KILLSWITCH_ENV}={raw!r} is neither 'true'/'1' nor 'false'/'0': evaluation "
            "telemetry is off (Datadog's convention: anything but true or 1 is false)",
            logging.WARNING,
        )
    return False


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where bodies are posted: the URL and, for ``unix://`` agents, the socket path."""

    url: str
    unix_socket: str | None
    headers: Mapping[str, str]
    #: scheme://host[:port]/path, without userinfo or query: the only form ever logged.
    display: str
    #: "agent" (its route is discovered, agent.py), "url" (intake_url), "agentless".
    mode: str = "url"

    def __repr__(self) -> str:
        return f"Endpoint({self.display!r}, unix_socket={self.unix_socket!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Validated settings of one pipeline. Build with :meth:`Settings.from_env`."""

    enabled: bool = True
    agent_url: str = "http://localhost:8126"
    agentless: bool = False
    api_key: str | None = None
    site: str = "datadoghq.com"
    intake_url: str | None = None
    service: str = "python"
    env: str | None = None
    version: str | None = None
    flush_interval_s: float = 10.0
    drain_interval_s: float = 0.05
    queue_size: int = 65_536
    max_full_buckets: int = 131_072
    max_buckets_per_flag: int = 10_000
    max_degraded_buckets: int = 32_768
    memory_budget_bytes: int = 64 * 1024 * 1024
    max_body_bytes: int = MAX_BODY_BYTES
    request_timeout_s: float = 5.0
    max_retries: int = 3
    retry_backoff_s: float = 0.5
    retry_buffer_bytes: int = 16 * 1024 * 1024
    shutdown_timeout_s: float = 5.0
    full_data_default: bool = True
    verify_tls: bool = True

    def __repr__(self) -> str:
        # api_key is a secret and URLs may carry tokens: never show either.
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key":
                value = None if value is None else "<redacted>"
            elif f.name in {"agent_url", "intake_url"} and value is not None:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **settings: Unpack[SettingsOverrides]
    ) -> Settings:
        """Settings from keyword overrides, else environment variables, else defaults
        (see the module docstring for what a bad value does)."""
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {k: v for k, v in settings.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown flageval setting(s): {', '.join(sorted(unknown))}")
        for name, value in given.items():
            check_field(name, value)  # strict: the programmer's values
        enabled = given.get("enabled")
        if not (enabled_from_env(env) if enabled is None else enabled):
            # Off: the environment is not read further, but a keyword URL is still
            # checked, so a typo shows in development whatever the killswitch says.
            for name in ("agent_url", "intake_url"):
                if name in given:
                    check_url(name, given[name], unix=name == "agent_url")
            return cls(**{**given, "enabled": False})
        try:
            values = {**_from_env(env, given), **given}
        except _Off as off:
            _report(off.var, off.raw, f"{off}; evaluation telemetry is off")
            return cls(enabled=False)
        result = cls(**values)
        result.validate()  # what is left to fail is the keywords' (or their mix)
        return result

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot be used."""
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))
        if self.retry_buffer_bytes < self.max_body_bytes:
            # Below one body the bound could not hold: a waiting body would exceed it.
            raise ValueError(
                f"retry_buffer_bytes ({self.retry_buffer_bytes}) must be >= max_body_bytes "
                f"({self.max_body_bytes})"
            )
        if self.agentless and not self.api_key:
            raise ValueError("agentless requires api_key (or DD_API_KEY)")
        self.endpoint()  # validates agent_url / intake_url / site

    def endpoint(self) -> Endpoint:
        """The URL bodies go to, with the headers the intake requires."""
        headers = {
            "Content-Type": "application/json",
            "X-Datadog-EVP-Subdomain": "event-platform-intake",
        }
        if self.agentless:
            url = self.intake_url or f"https://event-platform-intake.{self.site}{AGENTLESS_PATH}"
            headers = {"Content-Type": "application/json", "DD-API-KEY": str(self.api_key)}
            check_url("intake_url" if self.intake_url else "site", url, unix=False)
            return Endpoint(url, None, headers, redact_url(url), "agentless")
        if self.intake_url:
            check_url("intake_url", self.intake_url, unix=False)
            return Endpoint(self.intake_url, None, headers, redact_url(self.intake_url))
        agent = self.agent_url
        check_url("agent_url", agent, unix=True)
        if agent.startswith("unix://"):
            path = agent[len("unix://") :]
            return Endpoint(
                "http://localhost" + INTAKE_PATH, path, headers, "unix://" + path, "agent"
            )
        # The intake path goes after the agent URL's own path, before any query.
        parts = urlsplit(agent)
        path = parts.path.rstrip("/") + INTAKE_PATH
        url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        return Endpoint(url, None, headers, redact_url(url), "agent")


class SettingsOverrides(TypedDict, total=False):
    """The keyword arguments of ``Telemetry`` and ``Settings.from_env``: every field of
    :class:`Settings` (a test keeps the two lists equal). None means "not given"."""

    enabled: bool | None
    agent_url: str | None
    agentless: bool | None
    api_key: str | None
    site: str | None
    intake_url: str | None
    service: str | None
    env: str | None
    version: str | None
    flush_interval_s: float | None
    drain_interval_s: float | None
    queue_size: int | None
    max_full_buckets: int | None
    max_buckets_per_flag: int | None
    max_degraded_buckets: int | None
    memory_budget_bytes: int | None
    max_body_bytes: int | None
    request_timeout_s: float | None
    max_retries: int | None
    retry_backoff_s: float | None
    retry_buffer_bytes: int | None
    shutdown_timeout_s: float | None
    full_data_default: bool | None
    verify_tls: bool | None


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Settings)}


def _from_env(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting not given as a keyword that the environment sets, each checked on
    its own: a bad one is reported and left out (its default applies). Raises _Off
    when the values that decide where counts go cannot be used."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, var in {**{n: v[0] for n, v in NUMBERS.items()}, **BOOLS, **TEXTS}.items():
        raw = env.get(var)
        if name in given or raw is None or not raw.strip():
            continue
        try:
            values[name] = parse_env(name, raw)
            origin[name] = var
        except ValueError as exc:
            # BOOLS are read before TEXTS: agentless is known here, parsed, not just set.
            if name == "site" and given.get("agentless", values.get("agentless", False)):
                # No default is safe: another site is another region's intake.
                raise _Off(var, raw, f"{var} {exc}, got {raw!r}") from None
            default = infer_service() if name == "service" else _DEFAULTS[name]
            _report(var, raw, f"{var} {exc}, got {raw!r}; using the default {default!r}")

    def effective(name: str) -> Any:
        return given.get(name, values.get(name, _DEFAULTS[name]))

    if effective("retry_buffer_bytes") < effective("max_body_bytes"):
        for name in ("retry_buffer_bytes", "max_body_bytes"):
            if name in origin:
                var = origin[name]
                _report(
                    var,
                    env[var],
                    f"{var}={env[var]!r} conflicts: retry_buffer_bytes must be >= "
                    f"max_body_bytes (one body must fit); using the default {_DEFAULTS[name]}",
                )
                del values[name]
    if effective("agentless") and not effective("api_key") and "agentless" in origin:
        raise _Off("FLAGEVAL_AGENTLESS", env["FLAGEVAL_AGENTLESS"], "agentless needs DD_API_KEY")
    if "intake_url" in origin and (effective("agentless") or effective("intake_url")):
        try:
            check_url("FLAGEVAL_INTAKE_URL", effective("intake_url"), unix=False)
        except ValueError as exc:
            raise _Off("FLAGEVAL_INTAKE_URL", env["FLAGEVAL_INTAKE_URL"], str(exc)) from None
    if not (effective("agentless") or effective("intake_url")) and "agent_url" not in given:
        values["agent_url"] = _agent_url_from_env(env)
    if "service" not in given and "service" not in values:
        values["service"] = infer_service()
    return values


class _Off(Exception):
    """An environment value with no safe default: the pipeline turns itself off."""

    def __init__(self, var: str, raw: str, message: str) -> None:
        super().__init__(message)
        self.var, self.raw = var, raw


def _agent_url_from_env(env: Mapping[str, str]) -> str:
    """The agent's URL by Datadog's convention: DD_TRACE_AGENT_URL, else
    http://DD_AGENT_HOST:DD_TRACE_AGENT_PORT (localhost, 8126)."""
    url = env.get("DD_TRACE_AGENT_URL", "").strip()
    if url:
        try:
            check_url("DD_TRACE_AGENT_URL", url, unix=True)
        except ValueError as exc:
            raise _Off("DD_TRACE_AGENT_URL", url, str(exc)) from None
        return url
    port = env.get("DD_TRACE_AGENT_PORT", "").strip()
    # isascii(): "²" passes isdigit() and then fails int() without naming the variable.
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        _report(
            "DD_TRACE_AGENT_PORT",
            port,
            f"DD_TRACE_AGENT_PORT must be a port number from 1 to 65535, got {port!r}; "
            "using the default 8126",
        )
        port = ""
    host = env.get("DD_AGENT_HOST", "").strip() or "localhost"
    if not is_host(host):
        hint = " (a URL goes in DD_TRACE_AGENT_URL)" if "/" in host else ""
        raise _Off(
            "DD_AGENT_HOST",
            host,
            f"DD_AGENT_HOST must be a host name or an IP address{hint}, got {redact_url(host)!r}",
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{int(port) if port else 8126}"
