"""Snapshots the cyclic collector does not follow (flageval/_handoff.py's put() with the
compiled helper): the same tuple, untracked, and what it refers to lives exactly as long
as it does, cycles among the caller's values included."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest

from flageval._compiled import CKEYS
from flageval._handoff import Handoff, put
from flageval._tiers import Tiers

pytestmark = pytest.mark.skipif(CKEYS is None, reason="flageval._ckeys is not built here")


@dataclass
class Details:
    variant: str | None = "on"
    error_code: Any = None
    error_message: str | None = None
    flag_metadata: dict[str, Any] = field(default_factory=lambda: {"allocation_key": "a1"})
    reason: str | None = "STATIC"


@dataclass
class Context:
    attributes: dict[str, Any]
    targeting_key: str | None = "u1"


class Node:
    """A caller's value in a reference cycle of its own."""

    def __init__(self) -> None:
        self.me = self

    def __str__(self) -> str:
        return "node"


def _handed_over(details: Details, context: Context) -> Any:
    h = Handoff(10, accepting=True)
    assert put(h, lambda: None, "flag", details, context) == 0
    (snap,) = h.queue
    return snap


def test_a_snapshot_is_the_same_tuple_untracked() -> None:
    details, ctx = Details(), Context({"plan": "pro"})
    snap = _handed_over(details, ctx)
    assert not gc.is_tracked(snap)
    assert snap[:4] == ("flag", "on", None, None)
    assert snap[4] == details.flag_metadata and snap[4] is not details.flag_metadata
    assert snap[5:7] == ("u1", ctx.attributes) and snap[6] is ctx.attributes
    assert type(snap[7]) is int


def test_what_a_snapshot_holds_lives_as_long_as_it_and_no_longer() -> None:
    node = Node()
    alive = weakref.ref(node)
    queue = [_handed_over(Details(), Context({"node": node}))]
    del node
    gc.collect()
    assert alive() is not None  # held through the untracked snapshot: never collected
    tiers = Tiers(
        max_full_buckets=10,
        max_buckets_per_flag=10,
        max_degraded_buckets=10,
        memory_budget_bytes=1 << 20,
        full_data_default=True,
    )
    tiers.add_batch(queue)
    assert [k[6] for k in tiers.full] == [b'{"node":"node"}']
    queue.clear()
    gc.collect()
    assert alive() is None  # the caller's cycle goes once the snapshot is gone
