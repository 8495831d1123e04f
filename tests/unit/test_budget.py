"""The budget's background lane (Diadoc's reconciliation): it yields to every ordinary request and
keeps to its share, so that a busy fleet of boxes is never slowed by it."""

from __future__ import annotations

import threading
import time

from kontur_relay.kontur.budget import WINDOW_SECONDS, Budget


class VirtualTime:
    """A clock that moves only when someone sleeps (one thread at a time)."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def test_background_requests_keep_to_their_share_of_the_per_second_budget():
    time_ = VirtualTime()
    budget = Budget(max_in_flight=4, per_second=20, clock=time_.clock, sleep=time_.sleep)
    sent = []
    with budget.background(0.1):
        for _ in range(5):
            with budget.request():
                sent.append(time_.now)
    # 10% of 20 a window: two at once, then two a window later.
    assert sent == [0.0, 0.0, WINDOW_SECONDS, WINDOW_SECONDS, 2 * WINDOW_SECONDS]
    assert (budget.counts.background, budget.counts.requests) == (5, 5)


def test_ordinary_requests_are_not_held_to_the_background_share():
    time_ = VirtualTime()
    budget = Budget(max_in_flight=4, per_second=20, clock=time_.clock, sleep=time_.sleep)
    with budget.background(0.1), budget.request():
        pass
    for _ in range(19):
        with budget.request():
            pass
    assert time_.now == 0.0, "twenty requests in the window, one of them background"
    assert budget.counts.background == 1


def test_background_work_waits_while_an_ordinary_request_waits_and_never_takes_the_last_place():
    budget = Budget(max_in_flight=2, per_second=1000)
    order: list[str] = []
    holding, release_first = threading.Event(), threading.Event()

    def ordinary(name: str, hold: threading.Event | None = None) -> None:
        with budget.request():
            order.append(name)
            if hold is not None:
                holding.set()
                hold.wait(5)

    def background() -> None:
        with budget.background(0.5), budget.request():
            order.append("background")

    first = threading.Thread(target=ordinary, args=("first", release_first))
    first.start()
    holding.wait(5)
    # One place is taken, one is left: background work does not take the last one.
    late = threading.Thread(target=background)
    late.start()
    time.sleep(0.3)
    assert order == ["first"]
    second = threading.Thread(target=ordinary, args=("second",))
    second.start()
    second.join(5)
    assert order == ["first", "second"], "an ordinary request goes ahead of waiting background work"
    release_first.set()
    first.join(5)
    late.join(5)
    assert order == ["first", "second", "background"]


def test_with_one_place_in_flight_background_work_takes_it_only_when_it_is_free():
    budget = Budget(max_in_flight=1, per_second=1000)
    with budget.background(0.5), budget.request():
        pass
    assert budget.counts.background == 1
