"""Configuration: every setting, its environment variable, its default, its validation.

Each setting is a keyword argument of :class:`flageval.Telemetry`; a keyword left out
falls back to its environment variable, then to the default below. A value that cannot
be used raises :class:`ValueError` naming the setting (and the variable it came from),
at construction time, never later on a background thread.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import urlsplit, urlunsplit

from ._common import check_number, redact_url
from .service import infer_service

KILLSWITCH_ENV = "DD_FLAGGING_EVALUATION_COUNTS_ENABLED"
INTAKE_PATH = "/evp_proxy/v2/api/v2/flagevaluation"
AGENTLESS_PATH = "/api/v2/flagevaluation"
MAX_BODY_BYTES = 5 * 1024 * 1024

_FALSE = frozenset({"false", "0", "no", "off"})
_TRUE = frozenset({"true", "1", "yes", "on"})

T = TypeVar("T")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}, got {text!r}")


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
        """Settings from keyword overrides, else environment variables, else defaults."""
        env = os.environ if environ is None else environ
        overrides: dict[str, Any] = dict(settings)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown flageval setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}

        def pick(name: str, var: str | None, parse: Callable[[str], T]) -> None:
            if overrides.get(name) is not None:
                values[name] = overrides[name]
                return
            raw = env.get(var) if var else None
            if raw is None or raw.strip() == "":
                return
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                raise ValueError(f"invalid {var} (setting {name!r}): {exc}") from None

        pick("enabled", KILLSWITCH_ENV, _parse_bool)
        pick("agentless", "FLAGEVAL_AGENTLESS", _parse_bool)
        pick("api_key", "DD_API_KEY", str)
        pick("site", "DD_SITE", str)
        pick("intake_url", "FLAGEVAL_INTAKE_URL", str)
        pick("service", "DD_SERVICE", str)
        pick("env", "DD_ENV", str)
        pick("version", "DD_VERSION", str)
        pick("flush_interval_s", "FLAGEVAL_FLUSH_INTERVAL_S", float)
        pick("drain_interval_s", "FLAGEVAL_DRAIN_INTERVAL_S", float)
        pick("queue_size", "FLAGEVAL_QUEUE_SIZE", int)
        pick("max_full_buckets", "FLAGEVAL_MAX_FULL_BUCKETS", int)
        pick("max_buckets_per_flag", "FLAGEVAL_MAX_BUCKETS_PER_FLAG", int)
        pick("max_degraded_buckets", "FLAGEVAL_MAX_DEGRADED_BUCKETS", int)
        pick("memory_budget_bytes", "FLAGEVAL_MEMORY_BUDGET_BYTES", int)
        pick("max_body_bytes", "FLAGEVAL_MAX_BODY_BYTES", int)
        pick("request_timeout_s", "FLAGEVAL_REQUEST_TIMEOUT_S", float)
        pick("max_retries", "FLAGEVAL_MAX_RETRIES", int)
        pick("retry_backoff_s", "FLAGEVAL_RETRY_BACKOFF_S", float)
        pick("retry_buffer_bytes", "FLAGEVAL_RETRY_BUFFER_BYTES", int)
        pick("shutdown_timeout_s", "FLAGEVAL_SHUTDOWN_TIMEOUT_S", float)
        pick("full_data_default", "FLAGEVAL_FULL_DATA_DEFAULT", _parse_bool)
        pick("verify_tls", "FLAGEVAL_VERIFY_TLS", _parse_bool)
        if overrides.get("agent_url") is not None:
            values["agent_url"] = overrides["agent_url"]
        else:
            values["agent_url"] = _agent_url_from_env(env)
        values["service"] = values["service"] if "service" in values else infer_service()
        result = cls(**values)
        result.validate()
        return result

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot be used."""

        def positive(name: str, minimum: float = 0, inclusive: bool = False) -> None:
            check_number(getattr(self, name), name, minimum=minimum, inclusive=inclusive)

        def positive_int(name: str, minimum: int = 0, inclusive: bool = False) -> None:
            value = getattr(self, name)
            check_number(value, name, minimum=minimum, inclusive=inclusive, integer=True)

        for name in ("flush_interval_s", "drain_interval_s", "request_timeout_s"):
            positive(name)
        for name in ("shutdown_timeout_s", "retry_backoff_s"):
            positive(name, inclusive=True)
        for name in (
            "queue_size",
            "max_full_buckets",
            "max_buckets_per_flag",
            "max_degraded_buckets",
            "memory_budget_bytes",
            "retry_buffer_bytes",
        ):
            positive_int(name)
        positive_int("max_retries", inclusive=True)
        # A body must hold at least its envelope and one small row.
        positive_int("max_body_bytes", minimum=1024, inclusive=True)
        if self.retry_buffer_bytes < self.max_body_bytes:
            # Below one body the bound could not hold: a waiting body would exceed it.
            raise ValueError(
                f"retry_buffer_bytes ({self.retry_buffer_bytes}) must be >= max_body_bytes "
                f"({self.max_body_bytes})"
            )
        for name in ("enabled", "agentless", "full_data_default", "verify_tls"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.service, str) or not self.service:
            raise ValueError(f"service must be a non-empty string, got {self.service!r}")
        for name in ("env", "version"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, got {value!r}")
        for name in ("service", "env", "version"):
            # They go into every body as UTF-8: an undecodable byte from the
            # environment (a lone surrogate here) would fail every worker start.
            value = getattr(self, name)
            if value is not None and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"{name} is not valid UTF-8 text: {value!r}") from None
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
            _check_http_url("intake_url", url)
            return Endpoint(url, None, headers, redact_url(url), "agentless")
        if self.intake_url:
            _check_http_url("intake_url", self.intake_url)
            return Endpoint(self.intake_url, None, headers, redact_url(self.intake_url))
        agent = self.agent_url
        if not isinstance(agent, str):
            raise ValueError(f"agent_url must be a string, got {type(agent).__name__}")
        if agent.startswith("unix://"):
            path = agent[len("unix://") :]
            if not path.startswith("/"):
                raise ValueError("agent_url unix:// needs an absolute socket path")
            return Endpoint(
                "http://localhost" + INTAKE_PATH, path, headers, "unix://" + path, "agent"
            )
        _check_http_url("agent_url", agent)
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


def _check_http_url(name: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL: {redact_url(url)}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            f"{name} must be http://, https:// or unix:// with a host, got {redact_url(url)}"
        )


def _agent_url_from_env(env: Mapping[str, str]) -> str:
    url = env.get("DD_TRACE_AGENT_URL", "").strip()
    if url:
        return url
    host = env.get("DD_AGENT_HOST", "").strip() or "localhost"
    port = env.get("DD_TRACE_AGENT_PORT", "").strip() or "8126"
    # isascii(): "²" passes isdigit() and then fails int() without naming the variable.
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"invalid DD_TRACE_AGENT_PORT (setting 'agent_url'): {port!r}")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{port}"
