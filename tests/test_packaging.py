"""The package a user installs, built as published (the build backend's own wheel and
sdist, from this tree): README and every page it links are in both, in the
repository's layout (the wheel: under flageval/manual/), so every relative link
between them lands; the demo's last line names that installed copy; the metadata says
what a user expects (author, keywords, classifiers, an SDK bound with no ceiling); and
no test or benchmark code ships."""

from __future__ import annotations

import email
import email.message
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

import flageval

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
PAGES.append("benchmarks/README.md")
BUILD = """
import json, sys
from hatchling.build import build_sdist, build_wheel
out = sys.argv[1]
print(json.dumps({"wheel": build_wheel(out), "sdist": build_sdist(out)}))
"""


@dataclass
class Built:
    wheel: zipfile.ZipFile
    sdist: dict[str, bytes]  # path inside the sdist's top folder -> content
    unpacked: Path  # the wheel, extracted: what site-packages holds once installed


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-c", BUILD, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    names = json.loads(done.stdout.strip().splitlines()[-1])
    with tarfile.open(out / names["sdist"]) as tar:
        sdist = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            if f is not None:
                sdist[member.name.split("/", 1)[1]] = f.read()
    unpacked = out / "site-packages"
    with zipfile.ZipFile(out / names["wheel"]) as wheel:
        wheel.extractall(unpacked)
        yield Built(wheel, sdist, unpacked)


def _relative_links(text: str) -> list[str]:
    """Relative link targets of a Markdown page, without their anchors."""
    found = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t.partition("#")[0] for t in found if not re.match(r"^[a-z]+:", t) and t[0] != "#"]


def _links_land(files: dict[str, bytes]) -> None:
    for page in PAGES:
        assert page in files, page
        base = PurePosixPath(page).parent
        for target in _relative_links(files[page].decode("utf-8")):
            resolved = os.path.normpath(base / target)
            assert resolved in files or any(f.startswith(resolved + "/") for f in files), (
                page,
                target,
            )


def test_the_wheel_holds_readme_and_its_pages_and_every_link_lands(built: Built) -> None:
    prefix = "flageval/manual/"
    manual = {
        n[len(prefix) :]: built.wheel.read(n)
        for n in built.wheel.namelist()
        if n.startswith(prefix) and not n.endswith("/")
    }
    for page in PAGES:
        assert manual[page] == (ROOT / page).read_bytes(), page
    assert manual["LICENSE"] == (ROOT / "LICENSE").read_bytes()
    assert "schemas/flagevaluation.schema.json" in manual
    _links_land(manual)


def test_the_sdist_holds_readme_and_its_pages_and_every_link_lands(built: Built) -> None:
    for page in PAGES:
        assert built.sdist[page] == (ROOT / page).read_bytes(), page
    for name in ("LICENSE", "pyproject.toml", "flageval/__init__.py", "flageval/py.typed"):
        assert name in built.sdist, name
    _links_land(built.sdist)


def test_no_test_or_benchmark_code_ships(built: Built) -> None:
    shipped = [*built.wheel.namelist(), *built.sdist]
    assert not [n for n in shipped if n.startswith(("tests/", "benchmarks/")) and n.endswith(".py")]
    top = {n.split("/", 1)[0] for n in built.wheel.namelist()}
    assert top == {"flageval", f"flageval-{flageval.__version__}.dist-info"}
    assert "flageval/py.typed" in built.wheel.namelist()


def test_the_demo_names_the_installed_pages(built: Built) -> None:
    """Run from the unpacked wheel (ahead of the editable install on the path), the
    demo's pointer is the copy installed with the package."""
    done = subprocess.run(
        [sys.executable, "-c", "from flageval._cli.demo import manual; print(manual())"],
        cwd=built.unpacked,
        env={**os.environ, "PYTHONPATH": str(built.unpacked)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    where = Path(done.stdout.strip())
    assert where == built.unpacked / "flageval" / "manual"
    assert (where / "README.md").is_file() and (where / "docs" / "settings.md").is_file()


def test_the_metadata_a_user_expects(built: Built) -> None:
    raw = built.wheel.read(f"flageval-{flageval.__version__}.dist-info/METADATA").decode()
    meta: email.message.Message = email.message_from_string(raw)
    assert meta["Author"] == meta["Maintainer"] == "maintainers"
    assert {"openfeature", "telemetry", "datadog", "ofrep"} <= set(meta["Keywords"].split(","))
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Typing :: Typed", "Programming Language :: Python :: 3.11"):
        assert wanted in classifiers
    # The SDK's next release must not make flageval uninstallable beside it.
    assert "openfeature-sdk>=0.10" in (meta.get_all("Requires-Dist") or [])
    assert meta["Requires-Python"] == ">=3.11"
    assert meta.get_payload() == (ROOT / "README.md").read_text("utf-8")  # the PyPI page
