"""flageval.ofrep.server: an OFREP server evaluating flagd flag files with flagd's evaluator.

``create_app(flags=[...])`` is an aiohttp application (mount it, or run it with
``python -m flageval.ofrep.server --flags PATH``, or under gunicorn with aiohttp's
worker class); see docs/server.md. Needs the ``server`` extra
(``pip install 'flageval[server]'``: flagd's ``openfeature-flagd-core``).

One module per job:

- ``_options``: every setting, its default and check; the command's options;
- ``_flagfile``: one flag file, parsed and checked by flagd's own parser;
- ``_views``: flag sets as selected (``Flagd-Selector``) and their fingerprints;
- ``_watch``: polling the files, swapping a new configuration in;
- ``_request``: body, context and selector within limits; the ETag; If-None-Match;
- ``_evaluate``: flags -> OFREP items through flagd's evaluator;
- ``_cache``: evaluated answers per (flag set, context), bounded;
- ``_streams``: ADR-0008 event streams, one channel per flag set;
- ``_auth``: bearer / X-API-Key credentials and stream tokens;
- ``_count``: each evaluation into a flageval telemetry pipeline;
- ``_handlers``, ``_state`` and ``_app``: the endpoints, what they share, the factory;
- ``_logs``: the access log without query strings; flagd's logger rate-limited;
- ``__main__``: the command.
"""

try:
    import openfeature.contrib.tools.flagd.core  # noqa: F401
except ImportError:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "flageval.ofrep.server needs flagd's evaluator: pip install 'flageval[server]'"
    ) from None

from ._app import create_app
from ._logs import AccessLogger
from ._options import ENV_API_KEYS, ServerOptions

__all__ = ["ENV_API_KEYS", "AccessLogger", "ServerOptions", "create_app"]
