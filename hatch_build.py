"""Wheel build hook: compile flageval/_ckeys.c, the compiled flat path of flageval._keys.

It is built with the C compiler of the interpreter that builds the wheel (``CC`` in the
environment overrides it) against that interpreter's headers. Where that fails (no
compiler, no headers, another platform) the wheel is pure Python and says so: flageval
then keys contexts in Python, to the same bytes, more slowly. An editable install
builds the module next to its source, where the editable import finds it.
"""

from __future__ import annotations

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


class CompiledKeys(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        source = Path(self.root) / "flageval" / "_ckeys.c"
        name = f"_ckeys{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
        if version == "editable":
            target = Path(self.root) / "flageval" / name
        else:
            target = Path(tempfile.mkdtemp(prefix="flageval-build-")) / name
        problem = _compile(source, target)
        if problem is not None:
            self.app.display_warning(
                f"flageval: the compiled context keys were not built ({problem}); "
                "the pure-Python path is used (the same bytes, more CPU per evaluation)"
            )
            return
        if version != "editable":
            build_data["force_include"][str(target)] = f"flageval/{name}"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


def _compile(source: Path, target: Path) -> str | None:
    """None when ``target`` was built from ``source``, else what went wrong."""
    if sys.platform == "win32":
        return "no build recipe for Windows"
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    cmd = [
        *shlex.split(compiler),
        "-O2",
        "-fPIC",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        *link,
        str(source),
        "-o",
        str(target),
    ]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{cmd[0]}: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"{cmd[0]} exited {done.returncode}: {last[:200]}"
    return None
