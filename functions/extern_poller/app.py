"""Scheduled: relay the Kontur.Extern events feed to SNS, from the cursor until caught up or out of time."""

from kontur_relay.poller import poller_handler

handler = poller_handler("extern")
