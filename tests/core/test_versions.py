"""Job-status versions: whatever order writes arrive in, a job's status only moves forward."""

from __future__ import annotations

from tasqueue._keys import PHASE_DONE, PHASE_HANDED_BACK, PHASE_QUEUED, PHASE_RUNNING, status_version


def v(retried: int, released: int, deliveries: int, phase: int) -> int:
    return status_version(retried, released, deliveries, phase)


def test_one_attempt_moves_through_its_phases() -> None:
    assert v(0, 0, 0, PHASE_QUEUED) == 0  # enqueue writes "only if absent"
    assert 0 < v(0, 0, 1, PHASE_RUNNING) < v(0, 0, 1, PHASE_HANDED_BACK) < v(0, 0, 1, PHASE_DONE)


def test_a_retry_beats_everything_of_the_attempt_before() -> None:
    assert v(1, 0, 1, PHASE_RUNNING) > v(0, 0, 1, PHASE_HANDED_BACK)
    assert v(1, 0, 1, PHASE_RUNNING) > v(0, 0, 9, PHASE_DONE)  # a stale finish of the failed attempt


def test_a_shutdown_hand_back_is_superseded_by_the_next_delivery() -> None:
    assert v(0, 1, 1, PHASE_RUNNING) > v(0, 0, 3, PHASE_HANDED_BACK)


def test_a_redelivery_beats_the_worker_that_lost_the_lease_while_neither_finished() -> None:
    assert v(0, 0, 2, PHASE_RUNNING) > v(0, 0, 1, PHASE_RUNNING)
    assert v(0, 0, 2, PHASE_RUNNING) > v(0, 0, 1, PHASE_HANDED_BACK)


def test_once_an_attempt_finished_its_redeliveries_cannot_move_it_back() -> None:
    stale_finish = v(0, 0, 1, PHASE_DONE)
    assert v(0, 0, 2, PHASE_RUNNING) < stale_finish
    assert v(0, 0, 2, PHASE_HANDED_BACK) < stale_finish
    assert v(0, 0, 2, PHASE_DONE) == stale_finish  # the first finish is the one kept: the store refuses the second


def test_versions_stay_exact_in_a_double() -> None:
    biggest = v(0xFFFF, 0xFFFF, 0xFFFF, PHASE_DONE)
    assert biggest < 2**53 and float(biggest) == biggest
    assert v(10**6, 0, 0, PHASE_RUNNING) == v(0xFFFF, 0, 0, PHASE_RUNNING)  # clamped, never wraps
