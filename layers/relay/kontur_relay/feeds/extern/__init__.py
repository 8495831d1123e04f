"""Kontur.Extern's docflow events (``GET /v1/events``): one feed, ``extern``, for every account
that shares its events with the integrator.

- ``source``: the Source the relay engine polls, and Extern's errors;
- ``auth``: the credentials the Extern secret describes;
- ``kind``: the feed kind (cursor rules for operators, the poller's composition).
"""

from kontur_relay.feeds.extern.kind import KIND

__all__ = ["KIND"]
