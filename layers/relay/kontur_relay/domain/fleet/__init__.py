"""The budgeted many-feed loop: many feeds of one kind under one lease and one request budget.

- ``run``: a run (``Fleet``): the lease, the scan, the report and its metrics;
- ``schedule``: the line of due feeds, most overdue first, and background work beside it;
- ``turns``: a feed's turn: a few pages through the engine, then its next poll;
- ``model`` and ``ports``: what it works with, and the registry and background work a kind plugs in.
"""
