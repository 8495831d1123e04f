"""What the relay engine talks to: a feed, a sink, the cursors, and the request budget that counts (and
for many feeds, paces) its calls to Kontur. Adapters implement them; tests fake them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from kontur_relay.domain.model import CursorState, Feed, FeedEvent, Page, Success


class Source(Protocol):
    """A Kontur feed, read a page at a time from a cursor."""

    def read_page(self, cursor: str | None) -> Page:
        """Read the page after ``cursor`` (None: where a new feed starts)."""
        ...


class Publisher(Protocol):
    """Where events go (a sink: SNS today). It wraps each event in the envelope
    (:mod:`kontur_relay.domain.envelope`) as its sink encodes it, and returns only when the sink
    accepted every event; it raises PublishError otherwise."""

    def publish(self, feed: Feed, events: Sequence[FeedEvent]) -> None: ...


class CursorStore(Protocol):
    """The durable per-feed state: cursor with its version, the run lease, and what operators see."""

    def acquire_lease(self, feed: str, owner: str, until: float) -> CursorState | None:
        """Take the feed's lease until the epoch second ``until``, and return the feed's cursor as of
        that moment (a run that waited for its lease relays from there, not from where it looked
        first); None while another owner holds it (``owner``'s own lease is taken again: a retried
        write of its own)."""
        ...

    def renew_lease(self, feed: str, owner: str, until: float) -> bool:
        """Extend ``owner``'s lease to ``until``; False when the lease is no longer ``owner``'s."""
        ...

    def release_lease(self, feed: str, owner: str, *, success: Success | None = None) -> None:
        """Give up ``owner``'s lease (never another's); with ``success``, record it in the same
        write, as ``record_success`` would (and still record it if the lease was no longer ``owner``'s)."""
        ...

    def load(self, feed: str) -> CursorState: ...

    def advance(self, state: CursorState, position: str | None, *, relayed: int) -> CursorState:
        """Move the cursor iff its version is still ``state.version``; raise CursorConflict if not.
        A write of its own that landed but whose answer was lost is recognised, not a conflict."""
        ...

    def record_success(self, feed: str, *, backlog: int | None, backlog_capped: bool) -> None: ...

    def record_failure(self, feed: str, error: str, *, stop: bool = False, not_before: float | None = None) -> None:
        """Keep the error for operators; ``stop`` halts the feed until someone resumes it;
        ``not_before``: no run calls Kontur for this feed before then (epoch seconds)."""
        ...


class RequestCounts(Protocol):
    """What a budget counted: requests sent (retries and token requests included), those refused
    with a 429, and those sent as background work."""

    @property
    def requests(self) -> int: ...

    @property
    def throttled(self) -> int: ...

    @property
    def background(self) -> int: ...


class RequestBudget(Protocol):
    """The budget every request to Kontur goes through (``kontur.budget.Budget``)."""

    @property
    def counts(self) -> RequestCounts: ...

    def background(self, share: float) -> AbstractContextManager[None]:
        """Make this thread's requests background work: behind every ordinary request, within
        ``share`` (0..1) of the per-second budget."""
        ...
