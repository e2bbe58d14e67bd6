"""The compiled context keys as built (hatch_build.py) and loaded (flageval/_compiled.py):
a build embeds its source's SHA-256 and is loaded only beside that very source (or
none, as in a wheel); a module that is missing, does not load, was built from another
source or is an AddressSanitizer build without its runtime leaves the pure-Python path,
with no error and one line at INFO; without a compiler the wheel is pure Python and the
build warns; CFLAGS reach the compiler; a wheel built from the sdist carries the
module of its source."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from flageval._compiled import MARKER, refusal
from hatch_build import SANITIZE_ENV, compile_keys, extension_name

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "flageval" / "_ckeys.c"
DIGEST = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
NAME = extension_name()
LOADED = f"compiled: {NAME} (source sha256 {DIGEST[:12]})"
PROBE = (
    "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr, "
    "format='%(levelname)s %(name)s %(message)s'); import flageval._compiled as c; "
    "print(c.STATUS); print(getattr(c.CKEYS, 'SOURCE_SHA256', None))"
)


def _env(**extra: str) -> dict[str, str]:
    drop = ("CC", "CFLAGS", SANITIZE_ENV, "FLAGEVAL_PURE_PYTHON", "LD_PRELOAD")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _build(target: Path, **env: str) -> str | None:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("CC", "CFLAGS", SANITIZE_ENV):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        return compile_keys(SOURCE, target)


def _probe(package: Path) -> tuple[str, str, list[str]]:
    """STATUS, the loaded module's SOURCE_SHA256 ("None" when none is) and the lines
    logged, in an interpreter that imports the package at ``package``."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=package.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status, digest = out.stdout.splitlines()
    return status, digest, out.stderr.splitlines()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package with the module built beside its source: its parent goes
    first on the path of the interpreters run below."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "flageval", root / "flageval", ignore=shutil.ignore_patterns("*.so"))
    assert _build(root / "flageval" / NAME) is None
    return root / "flageval"


def _copy(package: Path, into: Path) -> Path:
    shutil.copytree(package, into / "flageval")
    return into / "flageval"


def test_a_build_beside_its_own_source_is_loaded_and_says_its_digest(package: Path) -> None:
    assert MARKER + DIGEST.encode() in (package / NAME).read_bytes()
    assert refusal(package / NAME, package / "_ckeys.c") is None
    status, digest, logged = _probe(package)
    assert (status, digest, logged) == (LOADED, DIGEST, [])


def test_a_build_of_another_source_is_refused_and_without_a_source_taken_as_it_is(
    package: Path, tmp_path: Path
) -> None:
    edited = _copy(package, tmp_path)
    with (edited / "_ckeys.c").open("a") as f:
        f.write("/* edited after the build */\n")
    why = f"pure Python: {NAME} was built from another version of _ckeys.c"
    status, digest, logged = _probe(edited)
    assert (status, digest) == (why, "None")
    assert logged == [f"INFO flageval the context keys run in {why}"]
    # An installed wheel ships no source: its module is loaded as it is.
    (edited / "_ckeys.c").unlink()
    assert _probe(edited) == (LOADED, DIGEST, [])


def test_a_missing_or_broken_module_leaves_the_python_path_in_one_info_line(
    package: Path, tmp_path: Path
) -> None:
    tree = _copy(package, tmp_path)
    (tree / NAME).unlink()
    why = "pure Python: the compiled module is not built"
    assert _probe(tree) == (why, "None", [f"INFO flageval the context keys run in {why}"])
    # Not a shared object (no source beside it, so nothing refuses it before the import).
    (tree / "_ckeys.c").unlink()
    (tree / NAME).write_bytes(b"not an ELF file")
    status, digest, logged = _probe(tree)
    assert status.startswith("pure Python: the compiled module does not load (")
    assert digest == "None"
    assert logged == [f"INFO flageval the context keys run in {status}"]


def test_a_source_that_cannot_be_read_refuses_the_build(package: Path, tmp_path: Path) -> None:
    (tmp_path / "_ckeys.c").mkdir()  # reading a directory fails
    why = refusal(package / NAME, tmp_path / "_ckeys.c")
    assert why is not None and why.startswith("_ckeys.c cannot be read (")


def test_an_address_sanitizer_build_is_not_loaded_without_its_runtime(
    package: Path, tmp_path: Path
) -> None:
    """Loading it would end the process ("ASan runtime does not come first")."""
    tree = _copy(package, tmp_path)
    assert _build(tree / NAME, **{SANITIZE_ENV: "address,undefined"}) is None
    built = (tree / NAME).read_bytes()
    assert b"__asan_init" in built and b"__ubsan_" in built and MARKER + DIGEST.encode() in built
    why = f"pure Python: {NAME} is a sanitizer build and LD_PRELOAD has no sanitizer runtime"
    assert _probe(tree) == (why, "None", [f"INFO flageval the context keys run in {why}"])


def test_cflags_reach_the_compiler(tmp_path: Path) -> None:
    problem = _build(tmp_path / NAME, CFLAGS="-include no-such-header.h")
    assert problem is not None and "no-such-header.h" in problem
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def _hatch(call: str, out: Path, cwd: Path, **env: str) -> tuple[str, str]:
    """The file ``build_wheel`` or ``build_sdist`` wrote into ``out``, and what it said."""
    code = f"import sys; from hatchling.build import {call}; print({call}(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1], done.stdout + done.stderr


def test_without_a_compiler_the_build_warns_and_the_wheel_is_pure_python(tmp_path: Path) -> None:
    name, said = _hatch("build_wheel", tmp_path, ROOT, CC="/bin/false")
    assert name == "flageval-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as wheel:
        assert [n for n in wheel.namelist() if "_ckeys" in n] == []
    assert "the compiled context keys were not built (/bin/false exited 1" in said


def test_a_wheel_built_from_the_sdist_carries_the_module_of_its_source(tmp_path: Path) -> None:
    """The published path: the sdist ships the C source and the build hook; the wheel
    built from it holds the compiled module, with that source's digest, and no C."""
    sdist, _ = _hatch("build_sdist", tmp_path, ROOT)
    with tarfile.open(tmp_path / sdist) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    (tree,) = (tmp_path / "src").iterdir()
    assert (tree / "flageval" / "_ckeys.c").read_bytes() == SOURCE.read_bytes()
    name, _ = _hatch("build_wheel", tmp_path, tree)
    assert "py3-none-any" not in name  # tagged for this interpreter
    with zipfile.ZipFile(tmp_path / name) as wheel:
        assert [n for n in wheel.namelist() if n.endswith(".c")] == []
        assert MARKER + DIGEST.encode() in wheel.read(f"flageval/{NAME}")
