"""The service name when ``DD_SERVICE`` is unset: the application's, never its launcher's.

Read from ``sys.argv`` (a multiprocessing child started by spawn, as ``uvicorn
--workers`` does, is given its parent's), in this order:

* a server that loads the app from a ``module:attr`` argument (gunicorn, uvicorn,
  hypercorn, daphne, granian; also run as ``python -m``): the app module's top-level
  package: ``gunicorn shop.wsgi:app`` and ``uvicorn shop.main:app`` give ``shop``;
* a module or script inside a package (``python -m shop.main``, ``python shop/main.py``):
  the top-level package, ``shop`` (found by walking up the ``__init__.py`` files, as
  dd-trace-py's inferred base service does);
* any other script or program: its name without ``.py`` (``python worker.py``:
  ``worker``);
* ``python -c``, the REPL, or nothing to go on: ``python``.

dd-trace-py 4.16 (``ddtrace/internal/settings/_inferred_base_service.py``) infers
nothing for the two servers above, ``shop.main`` for ``python -m shop.main`` and the
directory for a plain script; the rules here give one name to one application however
it is launched.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence

DEFAULT = "python"
LAUNCHERS = frozenset({"gunicorn", "uvicorn", "hypercorn", "daphne", "granian"})
#: ``pkg.module:attr`` (gunicorn also takes ``attr(args)``, a factory call).
_APP = re.compile(r"^([A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*:[A-Za-z_][\w.]*(?:\(.*\))?$")
_MODULE = re.compile(r"^([A-Za-z_]\w*)(?:\.[A-Za-z_]\w*)*$")
#: Options whose value looks like ``name:thing`` but is never the app (a bind address,
#: a worker class, a config file).
_NOT_APP_AFTER = frozenset(
    {"-b", "--bind", "--uds", "--host", "-k", "--worker-class", "-c", "--config"}
)


def infer_service(argv: Sequence[str] | None = None) -> str:
    """The default service for this process (``argv`` defaults to ``sys.argv``). Never
    raises; always a non-empty name that is valid UTF-8."""
    try:
        name = _infer(list(sys.argv if argv is None else argv))
        name.encode("utf-8")  # an undecodable argv byte would fail every body
    except Exception:
        return DEFAULT
    return name or DEFAULT


def _infer(argv: list[str]) -> str:
    if not argv or argv[0] in {"", "-c", "-m", "-"}:
        return DEFAULT
    program = argv[0]
    base = os.path.basename(program.rstrip("/\\"))
    stem = re.sub(r"(-script)?\.(pyw?|pyz|exe)$", "", base)
    if stem == "__main__":
        # ``python -m pkg`` (argv[0] is pkg/__main__.py), or a directory run as a script.
        program = os.path.dirname(os.path.abspath(program))
        stem = os.path.basename(program)
        if stem in LAUNCHERS:
            return _app(argv[1:]) or stem
        return _package(program, is_dir=True) or stem
    if stem in LAUNCHERS:
        return _app(argv[1:]) or stem
    return _package(program, is_dir=False) or stem


def _app(args: Sequence[str]) -> str | None:
    """The top-level package of the app a server was told to load."""
    for i, arg in enumerate(args):
        match = _APP.match(arg)
        if match and match.group(1) != "unix" and (i == 0 or args[i - 1] not in _NOT_APP_AFTER):
            return match.group(1)
    # gunicorn's APP_MODULE may omit ``:attr`` (``application``); it comes last.
    if args and not (len(args) > 1 and args[-2].startswith("-")):
        match = _MODULE.match(args[-1])
        if match:
            return match.group(1)
    return None


def _package(path: str, *, is_dir: bool) -> str | None:
    """The top-level package holding the script at ``path``, if it is in one."""
    folder = os.path.abspath(path if is_dir else os.path.dirname(path) or ".")
    top = None
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        top = os.path.basename(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return top
