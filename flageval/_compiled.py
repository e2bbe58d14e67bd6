"""The optional compiled helpers (``flageval/_ckeys.c``, built at install when a C
compiler is there): the flat path of context keys (``_keys``) and ``untracked`` for
snapshots (``_handoff``). ``CKEYS`` is the module, or None: ``FLAGEVAL_PURE_PYTHON=1``
in the environment at import, not built, built from another version of ``_ckeys.c``
than the one beside it, or not loadable. The pure-Python paths then run everywhere, to
the same bytes. ``STATUS`` says which path runs and why, in words.

A build embeds the SHA-256 of the source it compiled (``hatch_build.py``; the module's
``SOURCE_SHA256``). An editable install builds the module next to its source, so an
edit of ``_ckeys.c`` or a checkout of another commit would leave an old build in place:
where the source is present (a checkout; a wheel ships none), a module whose embedded
digest is not the source's is never loaded; the file is read, not imported, so no stale
code runs. A fallback other than the chosen one is logged once, at INFO, not WARNING:
it costs CPU, not correctness, and WARNING would reach the stderr of every program run
from a source tree through logging's last resort.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

#: The environment variable that selects the pure-Python paths.
PURE_PYTHON_ENV = "FLAGEVAL_PURE_PYTHON"
#: What precedes the source's digest in a built module (``_ckeys.c``'s SOURCE_MARKER).
MARKER = b"flageval._ckeys source sha256 "
_MODULE = "flageval._ckeys"

log = logging.getLogger("flageval")


def refusal(built: Path, source: Path) -> str | None:
    """Why the module at ``built`` must not be loaded; None if it may. It must not when
    ``source`` is there (a checkout; an installed wheel ships none) and is not the
    source it was built from, or when it is an AddressSanitizer build and that
    sanitizer's runtime is not preloaded (loading it would end the process)."""
    try:
        data = built.read_bytes()
    except OSError as exc:
        return f"{built.name} cannot be read ({exc.strerror or exc})"
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest().encode()
    except FileNotFoundError:
        digest = None
    except OSError as exc:
        return f"{source.name} cannot be read ({exc.strerror or exc})"
    if digest is not None and MARKER + digest not in data:
        return f"{built.name} was built from another version of {source.name}"
    if b"__asan_init" in data and "asan" not in os.environ.get("LD_PRELOAD", ""):
        return f"{built.name} is a sanitizer build and LD_PRELOAD has no sanitizer runtime"
    return None


def _find() -> tuple[Any, str]:
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0"):
        return None, f"pure Python: {PURE_PYTHON_ENV} is set"
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        return None, "pure Python: the compiled module is not built"
    built = Path(spec.origin)
    why = refusal(built, built.with_name("_ckeys.c"))
    if why is not None:
        return None, f"pure Python: {why}"
    try:
        module = importlib.import_module(_MODULE)
    except Exception as exc:  # another interpreter's build, a broken file: never raised
        return None, f"pure Python: the compiled module does not load ({exc})"
    digest = getattr(module, "SOURCE_SHA256", "unknown")  # none in builds before it
    return module, f"compiled: {built.name} (source sha256 {digest[:12]})"


def _load() -> tuple[Any, str]:
    module, status = _find()
    if module is None and not status.endswith(f"{PURE_PYTHON_ENV} is set"):
        log.info("the context keys run in %s", status)
    return module, status


CKEYS: Any
STATUS: str
CKEYS, STATUS = _load()
