"""The mutation runner's own configuration (tests/mutation.py; the run itself is not part
of the suite): every module it mutates and every test it selects exists, and every
equivalent mutant it lists names a module it runs, its mutated line and a reason."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from tests.mutation import MODULES, ROOT, load_equivalents


def _test_names(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)", path.read_text("utf-8"), re.M))


def test_every_module_file_and_selected_test_exists() -> None:
    assert set(MODULES) >= {"prune", "tiers", "wire", "retry_after", "transport"}
    for module in MODULES.values():
        dotted = [f.removesuffix(".py").replace("/", ".") + "." for f in module.files]
        for file in module.files:
            assert (ROOT / file).is_file(), (module.name, file)
        for glob in module.mutants:  # each names functions of the module's own files
            assert any(glob.startswith(d) for d in dotted), (module.name, glob)
        for test in module.tests:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), (module.name, test)
            if name:
                assert name in _test_names(ROOT / path), (module.name, test)


def test_every_equivalent_entry_is_complete() -> None:
    entries = load_equivalents()
    names = [e["mutant"] for e in entries]
    assert len(names) == len(set(names))
    for entry in entries:
        assert entry["module"] in MODULES, entry
        globs = MODULES[entry["module"]].mutants
        assert any(fnmatch.fnmatchcase(entry["mutant"], g) for g in globs), entry
        assert entry["change"].strip() and len(entry["reason"]) > 20, entry
