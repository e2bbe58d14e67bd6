from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .process import ServerProcess

RULES = Path(__file__).parent / "flags" / "rules.json"


def write_flags(path: Path, flags: dict[str, Any], metadata: dict[str, Any] | None = None) -> Path:
    """Replace a flag file atomically (write aside, rename), as a deploy would."""
    doc: dict[str, Any] = {"flags": flags}
    if metadata is not None:
        doc["metadata"] = metadata
    aside = path.with_suffix(".tmp")
    aside.write_text(json.dumps(doc))
    os.replace(aside, path)
    return path


def static(value: Any, variant: str = "v") -> dict[str, Any]:
    """A flag with one variant and no targeting."""
    return {"state": "ENABLED", "variants": {variant: value}, "defaultVariant": variant}


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start server processes; every one is stopped (SIGTERM) after the test."""
    started: list[ServerProcess] = []

    def start(flags: list[Path], *args: str, **kw: Any) -> ServerProcess:
        server = ServerProcess(flags, *args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
