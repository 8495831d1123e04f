"""The metrics the relay emits: what alarms, the dashboard and docs/operating.md's "Metrics" section are
written against. Renaming a metric here, in the code or in the template alone fails a test."""

from __future__ import annotations

NAMESPACE = "KonturFeedRelay"  # POWERTOOLS_METRICS_NAMESPACE
SERVICE = "kontur-feed-relay"  # POWERTOOLS_SERVICE_NAME, Powertools' `service` dimension
KINDS = ("extern", "diadoc")
#: Every metric carries exactly these dimensions: one series per feed kind, never one per Diadoc box.
DIMENSIONS = ("service", "kind")

#: name -> CloudWatch unit, for both kinds.
METRICS = {
    "RunSucceeded": "Count",
    "RunFailed": "Count",
    "EventsPublished": "Count",
    "Backlog": "Count",
    "LagSeconds": "Seconds",
    "KonturRequests": "Count",
    "KonturThrottled": "Count",
    "StoppedFeeds": "Count",
    "RunDuration": "Milliseconds",
    "Errors": "Count",
    # A tick of a kind whose credentials secret is still empty (not a failure).
    "NotConfigured": "Count",
    # Entries of a PublishBatch SNS failed and the publisher sent again.
    "PublishRetries": "Count",
    # Events over SNS's size limit stored in the payload bucket and published as pointers.
    "PayloadsOffloaded": "Count",
}
#: Diadoc's alone.
DIADOC_METRICS = {
    "BoxesPolled": "Count",
    "BoxesWithEvents": "Count",
    "BudgetUsed": "Percent",
    "OldestOverdueSeconds": "Seconds",
    # Reconciliation: events it published that the box's feed had not served in order, events
    # dropped because the box had published them (served again), passes, and its requests.
    "EventsRecovered": "Count",
    "DuplicatesSuppressed": "Count",
    "BoxesReconciled": "Count",
    "ReconciliationRequests": "Count",
    "ReconciliationShare": "Percent",
    # Boxes registered under both spellings of their id: each of their events is relayed twice.
    "BoxesStoredTwice": "Count",
}
#: Dimensions some metrics carry beside DIMENSIONS.
EXTRA_DIMENSIONS = {"Errors": ("error",)}


def dimensions(metric: str) -> set[str]:
    return {*DIMENSIONS, *EXTRA_DIMENSIONS.get(metric, ())}


def kinds(metric: str) -> tuple[str, ...]:
    return ("diadoc",) if metric in DIADOC_METRICS else KINDS if metric in METRICS else ()


def violations(documents: list[dict[str, object]]) -> list[str]:
    """What in these EMF documents (as Powertools printed them) breaks the contract."""
    found = []
    for document in documents:
        meta = document["_aws"]
        assert isinstance(meta, dict)
        for block in meta["CloudWatchMetrics"]:
            dimensions_ = {name for group in block["Dimensions"] for name in group}
            for metric in block["Metrics"]:
                name = metric["Name"]
                if not kinds(name):
                    found.append(f"{name} is not in the contract")
                elif dimensions_ != dimensions(name):
                    found.append(f"{name} has dimensions {sorted(dimensions_)}, not {sorted(dimensions(name))}")
                elif document.get("kind") not in kinds(name):
                    found.append(f"{name} emitted for kind {document.get('kind')!r}")
    return found
