"""The default service (DD_SERVICE unset) names the application, not its launcher: one
test per argv shape, each against a real package laid out in a temporary directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flageval import Settings
from flageval._service import infer_service

BIN = "/srv/venv/bin"


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """/tmp/.../shop/{__init__,wsgi,main}.py plus shop/api/{__init__,__main__}.py, and
    a plain script next to it; the cwd is their parent, as a server's would be."""
    pkg = tmp_path / "shop"
    (pkg / "api").mkdir(parents=True)
    for name in ("__init__.py", "wsgi.py", "main.py", "api/__init__.py", "api/__main__.py"):
        (pkg / name).write_text("app = None\n")
    (tmp_path / "worker.py").write_text("print('hi')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        [f"{BIN}/gunicorn", "shop.wsgi:app"],
        [f"{BIN}/gunicorn", "-w", "2", "-b", "127.0.0.1:8000", "shop.wsgi:app"],
        [f"{BIN}/gunicorn", "-k", "uvicorn.workers.UvicornWorker", "shop.main:app"],
        [f"{BIN}/gunicorn", "--bind", "unix:app.sock", "shop.wsgi:create_app()"],
        [f"{BIN}/gunicorn", "-w", "2", "shop.wsgi"],  # APP_MODULE without :attr, last
        [f"{BIN}/uvicorn", "shop.main:app", "--host", "0.0.0.0", "--port", "8000"],
        [f"{BIN}/uvicorn", "--factory", "shop.main:create_app", "--workers", "2"],
        [f"{BIN}/hypercorn", "shop.main:app"],
        [f"{BIN}/daphne", "-b", "0.0.0.0", "shop.asgi:application"],
        [f"{BIN}/granian", "--interface", "asgi", "shop.main:app"],
    ],
)
def test_a_server_gives_the_apps_top_level_package(shop: Path, argv: list[str]) -> None:
    assert infer_service(argv) == "shop"


def test_python_m_server_gives_the_apps_package(shop: Path) -> None:
    # ``python -m uvicorn shop.main:app``: argv[0] is uvicorn/__main__.py.
    main = shop / "site-packages" / "uvicorn" / "__main__.py"
    main.parent.mkdir(parents=True)
    main.write_text("")
    (main.parent / "__init__.py").write_text("")
    assert infer_service([str(main), "shop.main:app"]) == "shop"


def test_python_m_module_gives_its_top_level_package(shop: Path) -> None:
    # ``python -m shop.main``: while it runs, argv[0] is the module's file.
    assert infer_service([str(shop / "shop" / "main.py")]) == "shop"
    # ``python -m shop.api`` runs shop/api/__main__.py.
    assert infer_service([str(shop / "shop" / "api" / "__main__.py")]) == "shop"


def test_script_in_a_package_gives_the_package(shop: Path) -> None:
    assert infer_service(["shop/main.py", "--flag"]) == "shop"


def test_plain_script_gives_its_name(shop: Path) -> None:
    assert infer_service(["worker.py", "arg"]) == "worker"
    assert infer_service([str(shop / "worker.py")]) == "worker"
    assert infer_service(["/srv/tools/app.pyz"]) == "app"


def test_a_program_that_is_not_a_server_gives_its_name(shop: Path) -> None:
    assert infer_service([f"{BIN}/billing-daemon", "--once"]) == "billing-daemon"
    assert infer_service([f"{BIN}/celery", "-A", "proj", "worker"]) == "celery"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [""],  # the REPL
        ["-c"],  # python -c
        ["-m"],  # while -m is still looking for its module
        [f"{BIN}/gunicorn"],  # a server with its app in a config file: its own name
    ],
)
def test_nothing_to_go_on(shop: Path, argv: list[str]) -> None:
    expected = "gunicorn" if argv and argv[0].endswith("gunicorn") else "python"
    assert infer_service(argv) == expected


def test_undecodable_argv_falls_back_to_python(shop: Path) -> None:
    assert infer_service(["/srv/\udcff.py"]) == "python"


def test_settings_use_it_only_when_dd_service_is_unset(
    shop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", [f"{BIN}/uvicorn", "shop.main:app"])
    assert Settings.from_env({}).service == "shop"
    assert Settings.from_env({"DD_SERVICE": "checkout"}).service == "checkout"
    assert Settings.from_env({}, service="kw").service == "kw"


def test_a_spawned_uvicorn_worker_keeps_the_apps_name(shop: Path) -> None:
    """uvicorn --workers starts its workers by multiprocessing spawn (``python -c``):
    the child's name must still be the app's."""
    script = textwrap.dedent(
        """
        import multiprocessing as mp, sys
        from flageval._service import infer_service

        def child(q):
            q.put(infer_service())

        if __name__ == "__main__":
            sys.argv = ["/srv/venv/bin/uvicorn", "shop.main:app", "--workers", "2"]
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            print(q.get(timeout=20))
            p.join(20)
        """
    )
    (shop / "spawner.py").write_text(script)
    out = subprocess.run(
        [sys.executable, "spawner.py"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=shop,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "shop"
