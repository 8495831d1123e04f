"""Registering Diadoc boxes: what the admin API's box routes do with the registry and with Diadoc.

A registration is written at the cursor version it was decided on, the same condition the poller
moves the cursor under. A poll that lands between the read and the write makes the write fail: the
decision is taken again on what the box is now (its cursor may have appeared meanwhile, which
changes whether new filters are allowed), never written over it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kontur_relay.admin import box_lookup
from kontur_relay.admin.api import Caller
from kontur_relay.admin.box_discovery import Discovered, Skipped, VisibleBox
from kontur_relay.admin.box_lookup import Found
from kontur_relay.admin.boxes import BoxChange, BoxList, BoxView, Merge, reconciliation_view, settings_view
from kontur_relay.admin.paging import next_token, start_key
from kontur_relay.admin.problems import ApiError
from kontur_relay.aws import box_spellings
from kontur_relay.aws.box_items import RegisteredBox
from kontur_relay.aws.boxes import DynamoBoxRegistry
from kontur_relay.aws.dynamo import iso
from kontur_relay.domain.errors import ConfigurationError, CursorConflict, FeedAuthError, FeedError, FeedTimeout
from kontur_relay.feeds.diadoc import boxes
from kontur_relay.feeds.diadoc.config import BoxFeed, Start, api_version, box_feed
from kontur_relay.feeds.diadoc.organizations import DiadocOrganizations
from kontur_relay.feeds.diadoc.ticks import to_rfc3339
from kontur_relay.observability import logger
from kontur_relay.settings import Env

#: Reads and writes of one registration before giving up on a box that keeps changing under it.
ATTEMPTS = 3
#: GetNewEvents' largest page per API version (V7's original description says 100).
MAX_LIMITS = {"V8": 500, "V7": 100}


@dataclass(frozen=True)
class BoxDefaults:
    """The deployment's defaults, applied when a box is registered: DIADOC_START, DIADOC_PAGE_SIZE."""

    start: str
    limit: int
    max_limit: int

    @classmethod
    def from_env(cls, env: Env) -> BoxDefaults:
        max_limit = MAX_LIMITS[api_version(env.text("DIADOC_API_VERSION", "V8"))]
        start = env.text("DIADOC_START", "oldest")
        box_feed({"boxId": "defaults", "start": start})  # a malformed start fails at once, named
        # V7 reads at most 100 a page whatever the deployment's page size says.
        return cls(start=start, limit=min(env.whole("DIADOC_PAGE_SIZE", 500, high=500), max_limit), max_limit=max_limit)


def view(box: RegisteredBox, *, also_registered_as: str | None = None) -> BoxView:
    return BoxView(
        box_id=box.box_id,
        feed=box.feed,
        settings=settings_view(box.settings or {}),
        registered_at=box.registered_at,
        registered_by=box.registered_by,
        cursor=box.cursor.position,
        version=box.cursor.version,
        last_poll_at=box.last_poll_at,
        next_poll_at=iso(box.next_poll_at) if box.next_poll_at else None,
        poll_interval_seconds=box.interval or None,
        last_events_at=box.last_events_at,
        last_error=box.last_error,
        stopped=box.cursor.stopped_reason is not None,
        stopped_reason=box.cursor.stopped_reason,
        reconciliation=reconciliation_view(box.reconciliation),
        also_registered_as=also_registered_as,
        merge=Merge.model_validate(box.merge) if box.merge else None,
    )


def box_view(found: Found) -> BoxView:
    """A registered box as its answers show it, naming its other registration if it is stored twice."""
    return view(found.registered, also_registered_as=found.also_registered_as)


def page(registry: DynamoBoxRegistry, limit: int, token: str | None) -> BoxList:
    found, last = registry.page(limit, start_key(token))
    twins = {box.feed: boxes.twin(box.feed) for box in found}
    registered = box_spellings.registered_among(registry, filter(None, twins.values()))
    views = [view(box, also_registered_as=twins[box.feed] if twins[box.feed] in registered else None) for box in found]
    return BoxList(boxes=views, next_token=next_token(last))


def effective(feed: str, change: BoxChange, defaults: BoxDefaults) -> tuple[dict[str, Any], BoxFeed]:
    """The settings to store: what was asked over the deployment's defaults, as the feed reads them."""
    asked = change.settings()
    if asked.get("limit", 0) > defaults.max_limit:
        problem = {"loc": ["body", "limit"], "msg": f"at most {defaults.max_limit} on this API version", "type": "le"}
        raise ApiError(422, f"limit: at most {defaults.max_limit} on this Diadoc API version", detail=[problem])
    try:
        read = box_feed({**asked, "boxId": boxes.box_of(feed)}, {"start": defaults.start, "limit": defaults.limit})
    except ConfigurationError as error:
        raise ApiError(422, f"The settings are invalid: {error}") from None
    start = read.start.value
    if read.start is Start.TIME:
        # A moment is a timestampFromTicks filter too; stored as the time it was asked as, unless it
        # was asked as that filter, so that the stored settings read back as this very feed.
        asked_start = str(asked.get("start", defaults.start)).lower()
        ticks = int(dict(read.filters)["timestampFromTicks"])
        start = "oldest" if asked_start == "oldest" else (to_rfc3339(ticks) or asked_start)
    return {**dict(read.filters), "start": start, "limit": read.limit}, read


def put(
    registry: DynamoBoxRegistry,
    feed: str,
    change: BoxChange,
    defaults: BoxDefaults,
    who: Caller,
    *,
    clock: Callable[[], float] = time.time,
) -> tuple[RegisteredBox, bool]:
    """Register the box or change its settings; the box after, and whether it was (re)registered."""
    by = _principal(who)
    settings, read = effective(feed, change, defaults)
    key = boxes.filters_key(read)
    for _ in range(ATTEMPTS):
        before = registry.get(feed)
        created = before is None or not before.registered
        cursor = before.cursor if before is not None else None
        # A cursor from before the registry has no filters_key: nothing says it was read otherwise.
        kept_key = before.filters_key if before is not None else None
        if cursor is not None and cursor.position is not None and kept_key not in (None, key) and not change.restart:
            raise ApiError(
                409,
                f"Box {boxes.box_of(feed)} has a cursor read with other filters ({kept_key or 'none'}) than "
                f"these ({key or 'none'}): Diadoc pages only through requests with the same filters. Keep its "
                'filters, or send "restart": true to drop its cursor and start again at `start`.',
                current_version=cursor.version,
                current_cursor=cursor.position,
            )
        try:
            registry.register(
                feed,
                settings,
                key,
                by=by,
                expected_version=cursor.version if cursor is not None else 0,
                restart=change.restart,
                first_poll_at=clock(),
            )
        except CursorConflict:
            continue
        after = registry.get(feed)
        if after is None or not after.registered:
            continue  # removed in between: decided again on what it is now
        logger.info(
            "An operator restarted a Diadoc box" if change.restart else "An operator registered a Diadoc box",
            extra={
                "feed": feed,
                "registration": "new" if created else "change",
                "restart": change.restart,
                "filters_before": kept_key,
                "filters_after": key,
                "cursor_before": cursor.position if cursor is not None else None,
                "version": after.cursor.version,
                "by": by,
                "principal": who.principal,
                "source_ip": who.source_ip,
            },
        )
        return after, created
    raise ApiError(409, f"Box {boxes.box_of(feed)} kept changing while it was being registered: send it again")


def remove(registry: DynamoBoxRegistry, raw: str, who: Caller) -> None:
    by = _principal(who)
    feed = box_lookup.registered(registry, raw).feed
    if not registry.unregister(feed):
        raise ApiError(404, f"Box {boxes.box_of(feed)} is not registered")
    logger.info("An operator removed a Diadoc box; its cursor is kept", extra={"feed": feed, "by": by})


def discover(
    organizations: DiadocOrganizations,
    registry: DynamoBoxRegistry,
    defaults: BoxDefaults,
    who: Caller,
    *,
    register: bool,
) -> Discovered:
    """The boxes Diadoc shows the credential, which are relayed, and (``register``) the others registered."""
    if register:
        _principal(who)
    try:
        visible = organizations.boxes()
    except FeedError as error:
        raise diadoc_failed(error, "GetMyOrganizations") from None
    relayed = {box.box_id for box in registry.registered()}
    added: list[str] = []
    skipped: list[Skipped] = []
    for box in visible:
        if register and not {box.box_id, box.box_id_guid} & relayed:
            try:
                put(registry, box_lookup.lookup(registry, box.box_id).feed, BoxChange(), defaults, who)
            except ApiError as refused:
                skipped.append(Skipped(box_id=box.box_id, reason=refused.message))
            else:
                added.append(box.box_id)
                relayed.add(box.box_id)
    shown = [VisibleBox(**asdict(box), relayed=bool({box.box_id, box.box_id_guid} & relayed)) for box in visible]
    return Discovered(boxes=shown, registered=added, skipped=skipped)


def _principal(who: Caller) -> str:
    if who.name is None:
        # API Gateway's IAM authorizer always names the caller; without one, the route is open.
        raise ApiError(403, "No IAM principal in the request: the route must be IAM-authenticated")
    return who.name


def diadoc_failed(error: FeedError, method: str) -> ApiError:
    """The answer to Diadoc failing a request of the admin API's own."""
    fields = {"error": error.error_code} if error.error_code else {}
    if isinstance(error, FeedTimeout):
        return ApiError(504, f"Diadoc did not answer {method} in time", **fields)
    if error.status == 429:
        return ApiError(503, "Diadoc is throttling the relay: try again in a minute", **fields)
    if isinstance(error, FeedAuthError) or error.status in (401, 402, 403):
        return ApiError(
            502, f"Diadoc refused the relay's credentials (the Diadoc secret): status {error.status}", **fields
        )
    return ApiError(502, f"Diadoc failed: {error}", **fields)
