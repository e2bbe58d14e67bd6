"""Wheel build hook: compile flageval/_ckeys.c, the compiled flat path of flageval._keys.

It is built with the C compiler of the interpreter that builds the wheel (``CC`` in the
environment overrides it, and ``CFLAGS`` is added to the flags) against that
interpreter's headers. Where that fails (no compiler, no headers, another platform) the
wheel is pure Python and says so: flageval then keys contexts in Python, to the same
bytes, more slowly. An editable install builds the module next to its source, where the
editable import finds it.

The build embeds the SHA-256 of the source it compiled: ``flageval._compiled`` refuses
a module built from another version of ``_ckeys.c`` than the one beside it (an edit or
a checkout since the last editable install), and the pure-Python path runs until
``pip install -e .`` builds it again.

For development, ``FLAGEVAL_CKEYS_SANITIZE=address,undefined`` (any list that gcc's or
clang's ``-fsanitize=`` takes) builds an instrumented variant instead, with debug
information; an AddressSanitizer build is loaded only with its runtime preloaded
(``python -m tests.ckeys_check asan`` does all of it).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_TIMEOUT_S = 180
#: The environment variable that asks for a sanitizer build (development only).
SANITIZE_ENV = "FLAGEVAL_CKEYS_SANITIZE"


class CompiledKeys(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root) / "flageval" / "_ckeys.c"
        name = extension_name()
        if version == "editable":
            target = Path(self.root) / "flageval" / name
        else:
            target = Path(tempfile.mkdtemp(prefix="flageval-build-")) / name
        problem = compile_keys(source, target)
        if problem is not None:
            self.app.display_warning(
                f"flageval: the compiled context keys were not built ({problem}); "
                "the pure-Python path is used (the same bytes, more CPU per evaluation)"
            )
            return
        if os.environ.get(SANITIZE_ENV):
            self.app.display_warning(
                f"flageval: {SANITIZE_ENV} is set: the compiled context keys are a "
                "sanitizer build, for development only (they load with the sanitizer's "
                "runtime preloaded; elsewhere the pure-Python path is used)"
            )
        if version != "editable":
            build_data["force_include"][str(target)] = f"flageval/{name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


def extension_name() -> str:
    """The module's file name for the running interpreter."""
    return f"_ckeys{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"


def source_digest(source: Path) -> str:
    """The SHA-256 the build embeds, and that flageval._compiled checks."""
    return hashlib.sha256(source.read_bytes()).hexdigest()


def compile_keys(source: Path, target: Path) -> str | None:
    """None when ``target`` was built from ``source``, else what went wrong."""
    if sys.platform == "win32":
        return "no build recipe for Windows"
    try:
        digest = source_digest(source)
    except OSError as exc:
        return f"{source.name}: {exc.strerror or exc}"
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    sanitize = os.environ.get(SANITIZE_ENV, "").strip()
    extra = (
        [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
        if sanitize
        else []
    )
    if sanitize:
        extra.append("-O1")
    try:
        flags = shlex.split(os.environ.get("CFLAGS", ""))
        compiler_cmd = shlex.split(compiler)
    except ValueError as exc:  # an unbalanced quote
        return f"CC or CFLAGS cannot be read: {exc}"
    cmd = [
        *compiler_cmd,
        "-O2",
        "-fPIC",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        f'-DCKEYS_SOURCE_SHA256="{digest}"',
        *flags,
        *extra,
        *link,
        str(source),
        "-o",
    ]
    # Built beside the target, then renamed over it: a process that has the old file
    # loaded keeps its own copy, and a failed build leaves no half-written file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        done = subprocess.run(
            [*cmd, str(partial)], check=False, capture_output=True, text=True, timeout=_TIMEOUT_S
        )
        if done.returncode == 0:
            os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]}: {exc}"
    finally:
        partial.unlink(missing_ok=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no message"]
        said = next((line for line in lines if "error" in line), lines[-1])  # the first error
        return f"{cmd[0]} exited {done.returncode}: {said[:200]}"
    return None
