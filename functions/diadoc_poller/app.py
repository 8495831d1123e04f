"""Scheduled, once per box: relay the box's Diadoc events to SNS, from its cursor until caught up or out of time.

The schedule's input names the box, ``{"boxId": "..."}``, optionally with GetNewEvents' filters
(``departmentId``, ``messageType``, ...), ``start`` and ``limit``; the deployment's per-box settings
fill in the rest.
"""

from kontur_relay.poller import poller_handler

handler = poller_handler("diadoc")
