"""Poll intervals: backoff while nothing changes, short again after a change."""

from __future__ import annotations

from hsm.engine.pacing import PollPacer


def test_intervals_double_up_to_the_cap_while_nothing_changes() -> None:
    pacer = PollPacer(cap=60.0)
    intervals = []
    for _ in range(9):
        pacer.observed({"101_1": "running", "101_2": "running"})
        intervals.append(pacer.interval)
    assert intervals == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_a_change_or_a_submission_polls_soon_again() -> None:
    pacer = PollPacer(cap=60.0)
    for _ in range(8):
        pacer.observed({"101_1": "running"})
    assert pacer.interval == 60.0
    pacer.observed({"101_1": "finished"})
    assert pacer.interval == 1.0
    for _ in range(4):
        pacer.observed({"101_1": "finished"})
    assert pacer.interval == 16.0
    pacer.reset()
    assert pacer.interval == 1.0


def test_other_sources_keep_a_fixed_interval() -> None:
    pacer = PollPacer(first=1.0)
    for _ in range(5):
        pacer.observed({"a": 1})
    assert pacer.interval == 1.0
