"""The optional compiled helpers (``flageval/_ckeys.c``, built at install when a C
compiler is there): the flat path of context keys (``_keys``) and ``untracked`` for
snapshots (``_handoff``). ``CKEYS`` is the module, or None: not built, not loadable, or
``FLAGEVAL_PURE_PYTHON=1`` in the environment at import (the pure-Python paths then
run everywhere, to the same bytes)."""

from __future__ import annotations

import importlib
import os
from typing import Any

#: The environment variable that selects the pure-Python paths.
PURE_PYTHON_ENV = "FLAGEVAL_PURE_PYTHON"


def _load() -> Any:
    if os.environ.get(PURE_PYTHON_ENV, "").strip() not in ("", "0"):
        return None
    try:
        return importlib.import_module("flageval._ckeys")
    except ImportError:  # not built (no compiler where it was installed)
        return None


CKEYS: Any = _load()
