"""Which of two cursors of one box is behind, told from Diadoc's counts of the events after each
(read stay / stop / stay again): only a difference that events arriving meanwhile cannot explain decides."""

from __future__ import annotations

import pytest

from kontur_relay.admin.box_merge import Count, behind


@pytest.mark.parametrize(
    ("stay", "stop", "again", "verdict"),
    [
        (Count(10), Count(4), Count(12), "stay"),
        (Count(4), Count(10), Count(5), "stop"),
        (Count(7), Count(7), Count(7), "stay"),  # the same place
        (Count(7), Count(8), Count(9), None),  # events arrived while counting: too close to tell
        (Count(100_000, at_least=True), Count(5), Count(100_000, at_least=True), "stay"),
        (Count(5), Count(100_000, at_least=True), Count(5), "stop"),
        (Count(100_000, at_least=True), Count(100_000, at_least=True), Count(100_000, at_least=True), None),
        (None, Count(3), Count(3), None),
    ],
)
def test_which_cursor_is_behind_is_told_only_by_counts_that_events_arriving_cannot_explain(stay, stop, again, verdict):
    assert behind(stay, stop, again) == verdict
