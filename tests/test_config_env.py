"""Review: a bad agent port from the environment is reported naming its variable."""

from __future__ import annotations

import pytest

from flageval.config import Settings


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0662", "0", "65536", "80a"])
def test_bad_agent_port_names_the_variable(port: str) -> None:
    with pytest.raises(ValueError, match="DD_TRACE_AGENT_PORT"):
        Settings.from_env(environ={"DD_TRACE_AGENT_PORT": port})


def test_good_agent_port() -> None:
    settings = Settings.from_env(environ={"DD_TRACE_AGENT_PORT": "9126"})
    assert settings.agent_url == "http://localhost:9126"
