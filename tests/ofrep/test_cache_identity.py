"""Whose persisted evaluation is served: never another tenant's (the entry's identity
covers the base URL and every configured header value, hashed) and never another
anonymous user's (contexts without a targeting key are keyed by the whole context)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, GeneralError, ProviderFatalError
from openfeature.flag_evaluation import Reason

from flageval.ofrep import OFREPProvider

from .helpers import DOWN, entry_file
from .ofrep_server import OFREPTestServer, Scripted, wait_until

USER = EvaluationContext("user-1", {"name": "alice"})
TENANT_A = {"Authorization": "Bearer tenantA-0123456789"}
TENANT_B = {"Authorization": "Bearer tenantB-9876543210"}


def first_life(
    server: OFREPTestServer,
    make: Callable[..., OFREPProvider],
    directory: Path,
    context: EvaluationContext,
    **kw: object,
) -> None:
    """One process life that persists its evaluation of ``context`` in ``directory``."""
    provider = make(server.url, cache_dir=directory, change_detection="none", context=context, **kw)
    provider.initialize(context)
    wait_until(lambda: provider.stats()["cache_writes"] == 1, what="entry written")
    provider.shutdown()


def test_two_tenants_on_one_url_and_one_directory_never_see_each_other(
    tmp_path: Path, server: OFREPTestServer, make_provider: Callable[..., OFREPProvider]
) -> None:
    server.set_flag("secret", "tenant A's value")
    first_life(server, make_provider, tmp_path, USER, headers=TENANT_A)
    written = entry_file(tmp_path).read_text()
    for value in TENANT_A.values():
        assert value not in written and value.split()[-1] not in written

    # Tenant B, same URL, same directory, same user: its credentials are refused.
    server.script.append(Scripted(401))
    b = make_provider(
        server.url, cache_dir=tmp_path, change_detection="none", headers=TENANT_B, context=USER
    )
    with pytest.raises(ProviderFatalError):
        b.initialize(USER)
    details = b.resolve_string_details("secret", "code default")
    assert (details.value, details.error_code) == ("code default", ErrorCode.PROVIDER_NOT_READY)
    assert b.stats()["cache_hits"] == 0

    # With the server down, the same: nothing of tenant A's.
    server.script.append(DOWN)
    b_down = make_provider(
        server.url, cache_dir=tmp_path, change_detection="none", headers=TENANT_B, context=USER
    )
    with pytest.raises(GeneralError):
        b_down.initialize(USER)
    assert b_down.resolve_string_details("secret", "code default").value == "code default"
    assert b_down.stats()["cache_hits"] == 0
    b_down.shutdown()

    # Tenant A itself still starts from its entry.
    server.script.append(DOWN)
    a = make_provider(
        server.url, cache_dir=tmp_path, change_detection="none", headers=TENANT_A, context=USER
    )
    a.initialize(USER)
    details = a.resolve_string_details("secret", "code default")
    assert (details.value, details.reason) == ("tenant A's value", Reason.CACHED)


@pytest.mark.parametrize(
    "other",
    [
        {"base_url": "/prefix"},  # another base URL on the same server
        {"headers": {**TENANT_A, "X-Org": "o2"}},  # one more header
        {"headers": {"Authorization": TENANT_A["Authorization"] + "x"}},  # one more character
    ],
)
def test_another_base_url_or_any_other_header_value_is_another_identity(
    other: dict[str, object],
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.set_flag("f", 1)
    first_life(server, make_provider, tmp_path, USER, headers=TENANT_A)
    server.script.append(DOWN)
    kw: dict[str, object] = {"headers": TENANT_A, **other}
    url = server.url + str(kw.pop("base_url", ""))
    provider = make_provider(url, cache_dir=tmp_path, change_detection="none", **kw)
    with pytest.raises(GeneralError):
        provider.initialize(USER)
    assert provider.stats()["cache_hits"] == 0


def test_contexts_without_a_targeting_key_are_keyed_by_the_whole_context(
    tmp_path: Path,
    server: OFREPTestServer,
    make_provider: Callable[..., OFREPProvider],
) -> None:
    server.flags_for_context = lambda ctx: {
        "who": {"key": "who", "value": ctx["email"].split("@")[0], "reason": "TARGETING_MATCH"}
    }
    alice = EvaluationContext(None, {"email": "alice@example.com"})
    bob = EvaluationContext(None, {"email": "bob@example.com"})
    first_life(server, make_provider, tmp_path, alice)
    assert "alice@example.com" not in entry_file(tmp_path).read_text()

    server.script.append(DOWN)
    provider = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    api.set_evaluation_context(bob)
    with pytest.raises(GeneralError):
        provider.initialize(bob)  # alice's anonymous entry is not bob's
    assert provider.resolve_string_details("who", "none").value == "none"
    assert provider.stats()["cache_misses"] == 1
    provider.shutdown()

    server.script.append(DOWN)
    again = make_provider(server.url, cache_dir=tmp_path, change_detection="none")
    again.initialize(alice)  # the very same anonymous context: its own entry
    details = again.resolve_string_details("who", "none")
    assert (details.value, details.reason) == ("alice", Reason.CACHED)
