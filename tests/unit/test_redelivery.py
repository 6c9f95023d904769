from __future__ import annotations

from eddy.services.serving.redelivery import RedeliveryWindow


def test_only_the_first_batch_of_each_assigned_partition_is_suspect() -> None:
    window = RedeliveryWindow(size=3)
    assert window.suspects([("t", 0)]) == [False]  # nothing assigned yet
    window.assigned([("t", 0), ("t", 1)])
    assert window.suspects([("t", 0), ("t", 1), ("t", 0)]) == [True, True, True]
    assert window.suspects([("t", 0), ("t", 1), ("t", 1), ("t", 1)]) == [True, True, True, False]
    assert window.suspects([("t", 0), ("t", 1)]) == [False, False]


def test_a_new_assignment_opens_the_window_again() -> None:
    window = RedeliveryWindow(size=1)
    window.assigned([("t", 0)])
    assert window.suspects([("t", 0), ("t", 0)]) == [True, False]
    window.assigned([("t", 0)])
    assert window.suspects([("t", 0)]) == [True]
