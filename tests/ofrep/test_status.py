"""The provider's status machine: every transition, taken or refused, and its event."""

from __future__ import annotations

import itertools

import pytest
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.provider import ProviderStatus

from flageval.ofrep._status import Lifecycle, Status

S = Status
E = ProviderEvent

# Written out from the OpenFeature provider statuses and the README's promises, not read
# from the code: (from, to) -> the event that reports the move (None: silent).
ALLOWED: dict[tuple[Status, Status], ProviderEvent | None] = {
    (S.NOT_READY, S.READY): None,  # initialize() returns
    (S.NOT_READY, S.ERROR): None,  # initialize() raises GeneralError
    (S.NOT_READY, S.FATAL): None,  # initialize() raises ProviderFatalError
    (S.NOT_READY, S.CLOSED): None,
    (S.READY, S.STALE): E.PROVIDER_STALE,
    (S.READY, S.ERROR): E.PROVIDER_ERROR,  # the new context cannot be encoded
    (S.READY, S.FATAL): E.PROVIDER_ERROR,
    (S.READY, S.REJECTED): E.PROVIDER_ERROR,  # ADR-0009: 400/401/403 over a cached entry
    (S.READY, S.CLOSED): None,
    (S.STALE, S.READY): E.PROVIDER_READY,
    (S.STALE, S.ERROR): E.PROVIDER_ERROR,
    (S.STALE, S.FATAL): E.PROVIDER_ERROR,
    (S.STALE, S.REJECTED): E.PROVIDER_ERROR,
    (S.STALE, S.CLOSED): None,
    (S.ERROR, S.READY): E.PROVIDER_READY,
    (S.ERROR, S.FATAL): E.PROVIDER_ERROR,
    (S.ERROR, S.CLOSED): None,
    (S.FATAL, S.CLOSED): None,
    (S.REJECTED, S.CLOSED): None,
}

# A legal way to reach each status from a new Lifecycle.
PATHS: dict[Status, list[Status]] = {
    S.NOT_READY: [],
    S.READY: [S.READY],
    S.STALE: [S.READY, S.STALE],
    S.ERROR: [S.ERROR],
    S.FATAL: [S.FATAL],
    S.REJECTED: [S.READY, S.REJECTED],
    S.CLOSED: [S.CLOSED],
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[ProviderEvent, ProviderEventDetails]] = []

    def emit(self, event: ProviderEvent, details: ProviderEventDetails) -> None:
        self.events.append((event, details))


def reach(status: Status) -> tuple[Lifecycle, Recorder]:
    recorder = Recorder()
    lifecycle = Lifecycle(recorder)
    for step in PATHS[status]:
        assert lifecycle.move(step)
    assert lifecycle.status is status
    recorder.events.clear()
    return lifecycle, recorder


@pytest.mark.parametrize(("start", "to"), list(itertools.product(Status, Status)))
def test_every_transition_is_taken_or_refused_as_the_table_says(start: Status, to: Status) -> None:
    lifecycle, recorder = reach(start)
    details = ProviderEventDetails(message="why")
    taken = lifecycle.move(to, details)
    if (start, to) in ALLOWED:
        assert taken is True
        assert lifecycle.status is to
        event = ALLOWED[start, to]
        assert recorder.events == ([] if event is None else [(event, details)])
    else:
        assert taken is False
        assert lifecycle.status is start
        assert recorder.events == []


def test_fatal_and_closed_are_terminal_and_error_never_goes_stale() -> None:
    # The combinations the booleans could represent and the enum cannot.
    fatal, fatal_events = reach(S.FATAL)
    assert [fatal.move(s) for s in (S.READY, S.STALE, S.ERROR, S.NOT_READY)] == [False] * 4
    rejected, _ = reach(S.REJECTED)
    assert [rejected.move(s) for s in (S.READY, S.STALE, S.ERROR, S.FATAL)] == [False] * 4
    closed, closed_events = reach(S.CLOSED)
    assert [closed.move(s) for s in Status] == [False] * len(Status)
    error, error_events = reach(S.ERROR)
    assert error.move(S.STALE) is False
    assert (fatal.status, closed.status, error.status) == (S.FATAL, S.CLOSED, S.ERROR)
    assert fatal_events.events == closed_events.events == error_events.events == []


def test_initialize_raised_while_not_ready_is_the_silent_move_to_error() -> None:
    lifecycle, recorder = reach(S.NOT_READY)
    lifecycle.initialize_raised()
    assert lifecycle.status is S.ERROR
    assert recorder.events == []
    assert lifecycle.move(S.READY)  # the first success is then reported
    assert [e for e, _ in recorder.events] == [E.PROVIDER_READY]


def test_initialize_raised_after_the_outcome_reports_the_status_again() -> None:
    for status, expected in [
        (S.READY, [E.PROVIDER_READY]),
        (S.STALE, [E.PROVIDER_STALE]),
        (S.ERROR, []),  # the SDK shows ERROR already
        (S.REJECTED, [E.PROVIDER_ERROR]),
        (S.CLOSED, []),
    ]:
        lifecycle, recorder = reach(status)
        lifecycle.initialize_raised()
        assert lifecycle.status is status
        assert [e for e, _ in recorder.events] == expected, status


def test_initialize_raised_after_a_silent_fatal_reports_it_with_its_details() -> None:
    recorder = Recorder()
    lifecycle = Lifecycle(recorder)
    details = ProviderEventDetails(message="HTTP 401", error_code=ErrorCode.PROVIDER_FATAL)
    assert lifecycle.move(S.FATAL, details)
    assert recorder.events == []  # initialize() raises ProviderFatalError itself
    lifecycle.initialize_raised()
    assert recorder.events == [(E.PROVIDER_ERROR, details)]


def test_each_status_maps_onto_an_openfeature_provider_status() -> None:
    assert {s: s.provider_status for s in Status} == {
        S.NOT_READY: ProviderStatus.NOT_READY,
        S.READY: ProviderStatus.READY,
        S.STALE: ProviderStatus.STALE,
        S.ERROR: ProviderStatus.ERROR,
        S.FATAL: ProviderStatus.FATAL,
        # ADR-0009: the SDK shows ERROR and still asks the provider (cached values)
        S.REJECTED: ProviderStatus.ERROR,
        S.CLOSED: ProviderStatus.NOT_READY,
    }
    assert {s for s in Status if s.live} == {S.NOT_READY, S.READY, S.STALE, S.ERROR}
