"""The docs say what the code does: the loss tables are _losses.py's, every setting is in
docs/settings.md or docs/ofrep.md as declared (variables, default, range, doc line),
README's first two command lines are the demo and the tests (the one .ci/run runs),
every test a doc names exists, every relative link lands, and README's examples (both
ways in of the quick start, the sync and async applications) run against a real
intake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flageval import _losses as losses
from flageval._common import QUOTE_CHARS
from flageval._config import Settings
from flageval._settings import declared
from flageval.ofrep._config import OFREPConfig
from flageval.ofrep.server import ServerOptions
from tests.intake import Intake

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "benchmarks" / "README.md"]


def _table(text: str, header: str) -> list[list[str]]:
    """The body rows of the markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip()[1:-1].split("|")])
    return rows


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- counters ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("page", "header", "reasons"),
    [
        ("counters.md", "| dropped reason |", losses.Dropped),
        ("counters.md", "| degraded reason |", losses.Degraded),
        ("otel.md", "| unrecorded reason |", losses.Unrecorded),
    ],
    ids=["dropped", "degraded", "unrecorded"],
)
def test_counters_reason_tables_are_the_ledgers_own_words(
    page: str, header: str, reasons: type[losses.Reason]
) -> None:
    rows = _table((DOCS / page).read_text(), header)
    documented = [(_code(reason)[0], sentence) for reason, sentence in rows]
    assert documented == [(str(reason), reason.sentence) for reason in reasons]


# -- settings ----------------------------------------------------------------------------
def _plain(cell: str) -> str:
    return cell.replace("`", "").replace('"', "")


@pytest.mark.parametrize(
    ("page", "header", "cls"),
    [
        ("settings.md", "| setting |", Settings),
        ("ofrep.md", "| argument |", OFREPConfig),
        ("server.md", "| setting |", ServerOptions),
    ],
    ids=["telemetry", "ofrep", "server"],
)
def test_every_setting_is_documented_with_its_variables_default_and_range(
    page: str, header: str, cls: type
) -> None:
    """The page's table has one row per declared setting, in order and nothing else: its
    variables exactly, its default, its range in the error text's words, and a meaning
    that starts with the declaration's line of doc."""
    rows = _table((DOCS / page).read_text(), header)
    settings = declared(cls)
    assert [_code(row[0]) for row in rows] == [[d.name] for d in settings]
    for d, (_, var_cell, default_cell, range_cell, meaning) in zip(settings, rows, strict=True):
        assert _code(var_cell) == list(d.variables), d.name
        assert _code(range_cell) == ([d.bounds()] if d.bounds() else list(d.choices)), d.name
        assert _plain(meaning).startswith(d.spec.doc), (d.name, d.spec.doc)
        default, shown = d.default, _code(default_cell)
        if d.spec.default_text is not None:
            assert _plain(default_cell).startswith(d.spec.default_text), d.name
        elif default is None:
            assert default_cell.startswith(("unset", "none")), d.name
        elif isinstance(default, bool):
            assert shown[0] == str(default).lower(), d.name
        elif isinstance(default, int | float):
            assert float(shown[0]) == default, d.name
        else:
            assert shown[0].strip('"') == default, d.name


def test_the_agent_url_is_read_from_the_variables_its_row_names() -> None:
    """agent_url has no variable of its own: DD_TRACE_AGENT_URL, else DD_AGENT_HOST and
    DD_TRACE_AGENT_PORT, each of which changes the URL."""
    (agent_url,) = [d for d in declared(Settings) if d.name == "agent_url"]
    assert agent_url.variables == ("DD_TRACE_AGENT_URL", "DD_AGENT_HOST", "DD_TRACE_AGENT_PORT")
    assert Settings.from_env({"DD_TRACE_AGENT_URL": "http://a:1"}).agent_url == "http://a:1"
    env = {"DD_AGENT_HOST": "b", "DD_TRACE_AGENT_PORT": "2"}
    assert Settings.from_env(env).agent_url == "http://b:2"


def test_the_quoted_prefix_the_settings_page_gives_is_the_codes() -> None:
    assert f"first {QUOTE_CHARS} characters" in (DOCS / "settings.md").read_text()
    assert f"first {QUOTE_CHARS} characters" in (DOCS / "ofrep.md").read_text()


# -- README's command lines ------------------------------------------------------------------
def _command_lines(text: str) -> list[str]:
    """Lines of the fenced blocks without a language (or a shell one), in order."""
    lines: list[str] = []
    for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if lang in {"", "sh", "bash", "console", "shell"}:
            lines += [line for line in body.splitlines() if line.strip()]
    return lines


DEMO = re.compile(
    r"^python3 -m venv \.venv && \.venv/bin/pip install (-q )?-e \. "
    r"&& \.venv/bin/python -m flageval demo$"
)
TESTS = re.compile(
    r"^python3 -m venv \.venv && \.venv/bin/pip install -e '\.\[test\]' "
    r"&& \.venv/bin/python -m pytest -q -n 2 tests benchmarks --benchmark-disable$"
)


def test_readme_first_two_command_lines_are_the_demo_and_the_tests() -> None:
    first, second = _command_lines(README.read_text())[:2]
    assert DEMO.match(first), first
    assert TESTS.match(second), second  # no -q on the install: pip shows its progress
    # .ci/run takes its command with this very grep: it must find the second line.
    ci = (ROOT / ".ci" / "run").read_text()
    (pattern,) = re.findall(r'grep -m1 -E "([^"]+)" README\.md', ci)
    found = subprocess.run(
        ["grep", "-m1", "-E", pattern, str(README)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert found.stdout.rstrip("\n") == second


# -- references ------------------------------------------------------------------------------
def _defined(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_test_and_file_a_page_names_exists(page: Path) -> None:
    text = page.read_text()
    for path, name in re.findall(r"((?:tests|benchmarks)/[\w/]+\.py)::(test_\w+)", text):
        assert (ROOT / path).is_file(), (page.name, path)
        assert name in _defined(ROOT / path), (page.name, path, name)
    anywhere: set[str] = set()
    for folder in ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            anywhere |= _defined(path)
    for name in re.findall(r"::(test_\w+)", text):  # also the bare ``::name`` references
        assert name in anywhere, (page.name, name)
    for path in re.findall(r"`((?:tests|benchmarks|flageval|schemas)/[\w/.]+?\.(?:py|json))", text):
        assert (ROOT / path).is_file(), (page.name, path)


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), (page.name, target)
        if anchor:
            assert anchor in _anchors(dest), (page.name, target)


# -- README's examples run -----------------------------------------------------------------------
def _section(heading: str) -> str:
    return README.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _example(heading: str) -> str:
    """The section's runnable example: its last python block (any other compiles)."""
    *others, code = re.findall(r"```python\n(.*?)```", _section(heading), re.S)
    for other in others:
        compile(other, f"README.md, {heading}", "exec")
    return code


def _run_against(intake: Intake, tmp_path: Path, code: str, **extra_env: str) -> None:
    """Run ``code`` as a script of its own, its agent the test's intake; it must exit 0."""
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "FLAGEVAL_"))}
    env.update(DD_TRACE_AGENT_URL=intake.url, PYTHONPATH=str(ROOT), **extra_env)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("heading", ["A sync application", "An async application"])
def test_readme_examples_deliver_to_an_agent(heading: str, intake: Intake, tmp_path: Path) -> None:
    _run_against(intake, tmp_path, _example(heading))
    (body,) = intake.accepted()
    assert body.json()["context"]["service"] == "checkout"
    rows = body.json()["flagEvaluations"]
    assert [(r["flag"]["key"], r["evaluation_count"]) for r in rows] == [("new-checkout", 1)]


QUICK_START = "Quick start: the hook, or the wrapper"
# What the quick start leaves to the reader: a provider (and, for the hook, registering it).
PROVIDER = """
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
provider = InMemoryProvider({"new-checkout": InMemoryFlag("on", {"on": True, "off": False})})
"""
EVALUATE = """
assert api.get_client().get_boolean_value("new-checkout", False) is True
flageval.shutdown(timeout_s=5)
"""


@pytest.mark.parametrize("way", ["hook", "wrapper"])
def test_readme_quick_start_each_way_in_delivers_to_an_agent(
    way: str, intake: Intake, tmp_path: Path
) -> None:
    # The block shows both ways in: the wrapper's lines start at its "# or" comment.
    (block,) = re.findall(r"```python\n(.*?)```", _section(QUICK_START), re.S)
    head, wrapper = re.split(r"^# or\b.*\n", block, maxsplit=1, flags=re.M)
    imports = [line for line in head.splitlines() if line.startswith(("import ", "from "))]
    hook = [line for line in head.splitlines() if line.strip() and line not in imports]
    body = "\n".join(hook) + "\napi.set_provider_and_wait(provider)\n" if way == "hook" else wrapper
    _run_against(
        intake,
        tmp_path,
        "\n".join(imports) + "\n" + PROVIDER + body + EVALUATE,
        DD_SERVICE="checkout",
    )
    (body_sent,) = intake.accepted()
    assert body_sent.json()["context"]["service"] == "checkout"
    rows = body_sent.json()["flagEvaluations"]
    assert [(r["flag"]["key"], r["variant"]["key"], r["evaluation_count"]) for r in rows] == [
        ("new-checkout", "on", 1)
    ]


def test_readme_ofrep_examples_compile() -> None:
    for page in (README, DOCS / "ofrep.md"):
        for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
            compile(code, str(page), "exec")
