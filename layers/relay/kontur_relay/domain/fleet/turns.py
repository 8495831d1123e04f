"""A feed's turn in a many-feed run: a few pages of one feed through the engine (``Pages.drain``:
publish, then move that feed's cursor), then one write of its schedule. A feed whose poll found
nothing waits twice as long as before, up to the maximum interval; a poll that finds events brings
it back to the minimum; one with more to read stays due.

A turn's log lines carry its own feed and cursor: keys set for this thread only (the turns' threads
share one logger, and a key set on it would show on another feed's lines).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Generic

from kontur_relay.domain.errors import ConfigurationError, CursorConflict, FeedError, FeedStopped, FeedUnavailable
from kontur_relay.domain.fleet.model import M, Plug, Poll, Polling, Turn
from kontur_relay.domain.fleet.ports import FeedRegistry
from kontur_relay.domain.model import Page
from kontur_relay.domain.pace import Pace
from kontur_relay.domain.pages import Pages, Progress
from kontur_relay.domain.ports import CursorStore
from kontur_relay.observability import logger


class Turns(Generic[M]):
    """The turns of one kind's feeds, with the pages the engine built for each."""

    def __init__(
        self,
        feeds: FeedRegistry[M],
        cursors: CursorStore,
        polling: Polling,
        *,
        safety_margin: float,
        pace: Pace,
        noun: str = "feed",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.feeds = feeds
        self.cursors = cursors
        self.polling = polling
        self.safety_margin = safety_margin
        #: How long a page takes, learned from every feed's pages: no turn begins that cannot end in time.
        self.pace = pace
        self.noun = noun
        self.clock = clock
        self._pages: dict[str, tuple[Plug, Pages]] = {}

    def turn(self, member: M, time_left: Callable[[], float], started: float) -> Turn[M]:
        """A few pages of one feed, and when it is polled next (``started``: the run's start)."""
        began = self.clock()
        state = member.cursor
        logger.thread_safe_append_keys(feed=member.feed, cursor=state.position)

        def landed(progress: Progress, page: Page) -> None:
            nonlocal state
            state = progress.state
            logger.thread_safe_append_keys(cursor=state.position)

        try:
            progress = self._relay(member).drain(
                member.cursor, time_left, max_pages=self.polling.pages_per_turn, on_page=landed
            )
        except CursorConflict:
            # An operator moved the cursor since the scan: the next run reads it afresh.
            logger.info(f"A {self.noun}'s cursor moved since the scan; it is polled next run")
            return Turn(member.feed)
        except (FeedError, ConfigurationError) as error:
            # This feed's trouble (its answer, its access, its payment, its settings), not the others'.
            logger.warning(f"A {self.noun}'s poll failed", extra={"error": str(error), "error_kind": error.kind})
            # Kontur asked to be left alone for longer than a run (Retry-After): the feed waits that long.
            asked = error.retry_after if isinstance(error, FeedUnavailable) else None
            poll = Poll(
                next_poll_at=max(started + self.polling.min_interval, self.clock() + (asked or 0.0)),
                interval=self.polling.min_interval,
                had_events=False,
                began=began,
                error=f"{type(error).__name__}: {error}",
                # At the version this turn last wrote: an operator's resume since is not undone.
                stop_at=state.version if isinstance(error, FeedStopped) else None,
            )
            self.feeds.polled(member, poll)
            return Turn(member.feed, error=error.kind, duplicates=self.feeds.dropped(member))
        finally:
            # None hides the keys the engine sets on the shared logger, too.
            logger.thread_safe_append_keys(feed=None, cursor=None)
        return self._schedule(member, progress, started, began)

    def _schedule(self, member: M, progress: Progress, started: float, began: float) -> Turn[M]:
        if not progress.caught_up:
            # More waits: the feed stays due (a crash or the end of the run leaves it first in line
            # next time), and goes back in line behind the feeds already due in this run.
            next_poll_at, interval = self.clock(), member.interval or self.polling.min_interval
        else:
            interval = self.polling.next_interval(member.interval, progress.events > 0)
            # Counted from the run's start, not from this poll's end: a feed polled late in a run is
            # due again at the tick an interval later, not one tick after that. A little jitter
            # (early, never late) keeps feeds registered together from staying in lockstep for ever.
            next_poll_at = started + interval * random.uniform(0.9, 1.0)
        poll = Poll(
            next_poll_at=next_poll_at,
            interval=interval,
            had_events=progress.events > 0,
            state=progress.state,
            began=began,
            backlog=progress.backlog,
            backlog_capped=progress.backlog_capped,
        )
        again = self.feeds.polled(member, poll)
        return Turn(
            member.feed,
            progress.events,
            again=again,
            backlog=progress.backlog,
            duplicates=self.feeds.dropped(member),
            caught_up_at=began if progress.caught_up else None,
        )

    def _relay(self, member: M) -> Pages:
        plug = self.feeds.plug(member)
        built = self._pages.get(member.feed)
        if built is None or built[0] is not plug:
            # Not pipelined: the feeds' turns already overlap each other within the budget, and a
            # page read ahead would spend budget on a page the turn may end before.
            pages = Pages(
                plug.feed,
                plug.source,
                plug.publisher,
                self.cursors,
                safety_margin=self.safety_margin,
                pipelined=False,
                pace=self.pace,
            )
            built = self._pages[member.feed] = (plug, pages)
        return built[1]
