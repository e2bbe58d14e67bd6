"""The pipeline's settings, each declared once (a field of :class:`Settings`), and where
counts go.

Each setting is a keyword argument of :class:`flageval.Telemetry`; a keyword left out
falls back to its environment variable, then to its default (``flageval._settings``
loads them, as it does the OFREP provider's).

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
import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit, urlunsplit

from ._checks import check_url, is_host, service_name, site_name, utf8_text
from ._common import quote, redact_url
from ._service import infer_service
from ._settings import DAY_S, check_arguments, load, report_once, setting

log = logging.getLogger("flageval")

KILLSWITCH_ENV = "DD_FLAGGING_EVALUATION_COUNTS_ENABLED"
INTAKE_PATH = "/evp_proxy/v2/api/v2/flagevaluation"
AGENTLESS_PATH = "/api/v2/flagevaluation"
MAX_BODY_BYTES = 5 * 1024 * 1024
AGENT_URL_ENV = ("DD_TRACE_AGENT_URL", "DD_AGENT_HOST", "DD_TRACE_AGENT_PORT")
#: Counts and sizes: far past any memory, and every one prints, encodes and converts.
_MOST = 10**15

#: Datadog's booleans (dd-trace-py's ``asbool``): these two mean on, anything else off.
_DD_ON = frozenset({"true", "1"})
_DD_OFF = frozenset({"false", "0", "no", "off"})  # off, and clearly meant so: no warning


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
        report_once(
            log,
            KILLSWITCH_ENV,
            raw,
            f"{KILLSWITCH_ENV}={quote(raw)} is neither 'true'/'1' nor 'false'/'0': evaluation "
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


def _seconds(default: float, doc: str, env: str, floor: float = 0.0, zero_ok: bool = False) -> Any:
    """A duration: at most a day; above 0 (at least 0 when ``zero_ok``), or at least ``floor``."""
    inclusive = floor > 0 or zero_ok
    return setting(default, doc, env=env, minimum=floor, inclusive=inclusive, maximum=DAY_S)


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """Validated settings of one pipeline. Build with :meth:`Settings.from_env`."""

    enabled: bool = setting(True, "the killswitch", env=KILLSWITCH_ENV)
    agent_url: str = setting("http://localhost:8126", "the Datadog agent", more_env=AGENT_URL_ENV)
    agentless: bool = setting(
        False, "post straight to Datadog's intake, with no agent", env="FLAGEVAL_AGENTLESS"
    )
    api_key: str | None = setting(None, "agentless only", env="DD_API_KEY", secret=True)
    site: str = setting("datadoghq.com", "agentless only", env="DD_SITE", rule=site_name)
    intake_url: str | None = setting(
        None, "post to this exact URL instead", env="FLAGEVAL_INTAKE_URL"
    )
    service: str = setting(
        "python",
        "the body's context.service",
        env="DD_SERVICE",
        rule=service_name,
        default_from=lambda env: infer_service(),
        default_text="inferred from the application",
    )
    env: str | None = setting(None, "the body's context.env", env="DD_ENV", rule=utf8_text)
    version: str | None = setting(
        None, "the body's context.version", env="DD_VERSION", rule=utf8_text
    )
    flush_interval_s: float = _seconds(
        10.0, "seconds between posts", "FLAGEVAL_FLUSH_INTERVAL_S", floor=0.01
    )
    drain_interval_s: float = _seconds(
        0.05, "how often the worker drains the hand-off", "FLAGEVAL_DRAIN_INTERVAL_S", floor=0.001
    )
    queue_size: int = setting(
        65_536, "evaluations waiting in the hand-off", env="FLAGEVAL_QUEUE_SIZE", maximum=_MOST
    )
    max_full_buckets: int = setting(
        131_072, "full-tier buckets in all", env="FLAGEVAL_MAX_FULL_BUCKETS", maximum=_MOST
    )
    max_buckets_per_flag: int = setting(
        10_000, "full-tier buckets per flag", env="FLAGEVAL_MAX_BUCKETS_PER_FLAG", maximum=_MOST
    )
    max_degraded_buckets: int = setting(
        32_768, "degraded-tier buckets", env="FLAGEVAL_MAX_DEGRADED_BUCKETS", maximum=_MOST
    )
    memory_budget_bytes: int = setting(
        64 * 1024 * 1024,
        "bytes the tiers may hold",
        env="FLAGEVAL_MEMORY_BUDGET_BYTES",
        maximum=_MOST,
    )
    # A body must hold at least its envelope and one small row.
    max_body_bytes: int = setting(
        MAX_BODY_BYTES,
        "encoded bytes per POST",
        env="FLAGEVAL_MAX_BODY_BYTES",
        maximum=_MOST,
        minimum=1024,
        inclusive=True,
    )
    request_timeout_s: float = _seconds(5.0, "per request", "FLAGEVAL_REQUEST_TIMEOUT_S")
    max_retries: int = setting(
        3, "retries within one flush", env="FLAGEVAL_MAX_RETRIES", maximum=_MOST, inclusive=True
    )
    retry_backoff_s: float = _seconds(
        0.5, "base of the exponential backoff", "FLAGEVAL_RETRY_BACKOFF_S", zero_ok=True
    )
    retry_buffer_bytes: int = setting(
        16 * 1024 * 1024,
        "bodies kept for the next flush",
        env="FLAGEVAL_RETRY_BUFFER_BYTES",
        maximum=_MOST,
    )
    shutdown_timeout_s: float = _seconds(
        5.0, "default deadline of shutdown()", "FLAGEVAL_SHUTDOWN_TIMEOUT_S", zero_ok=True
    )
    full_data_default: bool = setting(
        True, "consent when a flag's metadata does not say", env="FLAGEVAL_FULL_DATA_DEFAULT"
    )
    verify_tls: bool = setting(
        True, "false turns off certificate verification", env="FLAGEVAL_VERIFY_TLS"
    )
    otel_metrics: bool = setting(
        False,
        "count evaluations into OpenTelemetry's feature_flag.evaluations",
        env="FLAGEVAL_OTEL_METRICS",
    )
    datadog: bool = setting(
        True, "post the counts to Datadog; false: OpenTelemetry only", env="FLAGEVAL_DATADOG"
    )

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
        given = check_arguments(cls, settings)  # strict: the programmer's values
        enabled = given.get("enabled")
        if not (enabled_from_env(env) if enabled is None else enabled):
            # Off: the environment is not read further, but a keyword URL is still
            # checked, so a typo shows in development whatever the killswitch says.
            for name in ("agent_url", "intake_url"):
                if name in given:
                    check_url(name, given[name], unix=name == "agent_url")
            return cls(**{**given, "enabled": False})
        try:
            values = _from_env(env, given)
        except _Off as off:
            report_once(log, off.var, off.raw, f"{off}; evaluation telemetry is off")
            return cls(enabled=False)
        result = cls(**values)
        result.validate()  # what is left to fail is the keywords' (or their mix)
        return result

    def validate(self) -> None:
        """Raise ValueError naming the first setting that cannot be used."""
        check_arguments(Settings, dataclasses.asdict(self))
        if self.retry_buffer_bytes < self.max_body_bytes:
            # Below one body the bound could not hold: a waiting body would exceed it.
            raise ValueError(
                f"retry_buffer_bytes ({self.retry_buffer_bytes}) must be >= max_body_bytes "
                f"({self.max_body_bytes})"
            )
        if self.agentless and not self.api_key:
            raise ValueError("agentless requires api_key (or DD_API_KEY)")
        if self.otel_metrics and not otel_api_installed():
            raise ValueError(f"otel_metrics=True {_NO_OTEL}")
        if not (self.datadog or self.otel_metrics):
            raise ValueError(
                "datadog=False needs otel_metrics=True: with neither export nothing would "
                "be counted (enabled=False turns telemetry off)"
            )
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
    otel_metrics: bool | None
    datadog: bool | None


#: Why an OpenTelemetry export cannot be had.
_NO_OTEL = "needs opentelemetry-api (pip install 'flageval[otel]')"


def otel_api_installed() -> bool:
    """Whether OpenTelemetry's metrics API can be imported (it is not imported here)."""
    try:
        return importlib.util.find_spec("opentelemetry.metrics") is not None
    except (ImportError, ValueError):
        return False


def _exports(env: Mapping[str, str], values: dict[str, Any], origin: Mapping[str, str]) -> None:
    """The exports the environment asked for, if they can be had: an OpenTelemetry
    export without its API is logged and left off; a pipeline left with neither export
    is off (_Off)."""
    if values["otel_metrics"] and "otel_metrics" in origin and not otel_api_installed():
        var = origin["otel_metrics"]
        report_once(log, var, env[var], f"{var}=true {_NO_OTEL}; the OpenTelemetry export is off")
        values["otel_metrics"] = False
    asked = [origin[name] for name in ("datadog", "otel_metrics") if name in origin]
    if not (values["datadog"] or values["otel_metrics"]) and asked:
        var = asked[0]
        raise _Off(
            var,
            env[var],
            f"{var}={quote(env[var])} leaves no export: the Datadog one is off and the "
            "OpenTelemetry one is not on (FLAGEVAL_OTEL_METRICS=true, opentelemetry-api)",
        )


def _from_env(env: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting: its keyword, else its variable's value, else its default; a bad
    variable is reported and its default used. Raises _Off when the values that decide
    where counts go cannot be used."""
    loaded = load(Settings, {**given, "enabled": True}, env)
    values, origin = loaded.values, loaded.origin
    _exports(env, values, origin)
    for problem in loaded.problems:
        if problem.name == "site" and values["agentless"] and values["datadog"]:
            # No default is safe: another site is another region's intake.
            raise _Off(problem.var, problem.raw, str(problem))
        default = values[problem.name]
        report_once(log, problem.var, problem.raw, f"{problem}; using the default {default!r}")
    defaults = Settings()
    if values["retry_buffer_bytes"] < values["max_body_bytes"]:
        for name in ("retry_buffer_bytes", "max_body_bytes"):
            if name in origin:
                var = origin[name]
                report_once(
                    log,
                    var,
                    env[var],
                    f"{var}={quote(env[var])} conflicts: retry_buffer_bytes must be >= "
                    "max_body_bytes (one body must fit); using the default "
                    f"{getattr(defaults, name)}",
                )
                values[name] = getattr(defaults, name)
    if not values["datadog"]:
        return values  # OpenTelemetry only: where Datadog's counts would go is not read
    if values["agentless"] and not values["api_key"] and "agentless" in origin:
        raise _Off("FLAGEVAL_AGENTLESS", env["FLAGEVAL_AGENTLESS"], "agentless needs DD_API_KEY")
    if "intake_url" in origin and (values["agentless"] or values["intake_url"]):
        try:
            check_url("FLAGEVAL_INTAKE_URL", values["intake_url"], unix=False)
        except ValueError as exc:
            raise _Off("FLAGEVAL_INTAKE_URL", env["FLAGEVAL_INTAKE_URL"], str(exc)) from None
    if not (values["agentless"] or values["intake_url"]) and "agent_url" not in given:
        values["agent_url"] = _agent_url_from_env(env)
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
    # isascii(): "²" passes isdigit() and then fails int() without naming the variable;
    # past five digits (leading zeros aside) int() need not read it: no port is that long.
    digits = port.lstrip("0")
    if port and not (
        port.isascii() and port.isdigit() and 0 < len(digits) <= 5 and int(digits) < 65536
    ):
        report_once(
            log,
            "DD_TRACE_AGENT_PORT",
            port,
            f"DD_TRACE_AGENT_PORT must be a port number from 1 to 65535, got {quote(port)}; "
            "using the default 8126",
        )
        port = ""
    host = env.get("DD_AGENT_HOST", "").strip() or "localhost"
    if not is_host(host):
        hint = " (a URL goes in DD_TRACE_AGENT_URL)" if "/" in host else ""
        raise _Off(
            "DD_AGENT_HOST",
            host,
            f"DD_AGENT_HOST must be a host name or an IP address{hint}, got "
            f"{quote(redact_url(host))}",
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # a bare IPv6 address
    return f"http://{host}:{int(digits) if port else 8126}"
