"""What the admin API's Diadoc box routes answer, for their OpenAPI description: each route's
summary, description and statuses. The models they read and answer are in ``admin.boxes``."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import content_types

from kontur_relay.admin.boxes import BoxView
from kontur_relay.admin.problems import responses

BAD_ID = "The box id is neither a GUID nor `<32 hex digits>@diadoc.ru`; or the nextToken is not one this API gave"
NOT_RELAYED = "The box is not registered"
WHO = "The request carries no IAM principal to record the change with"
LIST_BOXES: dict[str, Any] = {
    "summary": "The registered Diadoc boxes, their settings and polling",
    "tags": ["diadoc boxes"],
    "responses": responses("A page of boxes", {400: BAD_ID}),
}
GET_BOX: dict[str, Any] = {
    "summary": "One registered box",
    "tags": ["diadoc boxes"],
    "responses": responses("The box", {400: BAD_ID, 404: NOT_RELAYED}),
}
_BOX_JSON = {content_types.APPLICATION_JSON: {"model": BoxView}}
PUT_BOX: dict[str, Any] = {
    "summary": "Register a box, or change its settings",
    "description": "The body is the box's whole settings (none: the deployment's defaults). Either spelling of "
    "the id is the same box: a registered box answers 200 whichever spelling names it, and a new one is "
    "registered as `diadoc:<32 hex digits>@diadoc.ru`. Registering a box removed earlier resumes its kept "
    "cursor. Changing the filters of a box that has a cursor answers 409 unless `restart` is true, which "
    "starts it again at `start`; the change is logged with who asked. A new or restarted box is polled at once.",
    "tags": ["diadoc boxes"],
    "responses": {
        **responses(
            "Registered (also a box registered again, which resumes its cursor)",
            {
                400: BAD_ID,
                403: WHO,
                409: "The box has a cursor read with other filters (send restart), or it changed meanwhile",
            },
            status=201,
            content=_BOX_JSON,
        ),
        200: {"description": "The settings changed (or were already these)", "content": _BOX_JSON},
    },
}
DELETE_BOX: dict[str, Any] = {
    "summary": "Stop relaying a box; its cursor is kept, and registering it again resumes from it",
    "tags": ["diadoc boxes"],
    "responses": responses("Removed", {400: BAD_ID, 403: WHO, 404: NOT_RELAYED}, status=204),
}
MERGE_BOX: dict[str, Any] = {
    "summary": "Make a box registered under both spellings of its id one feed again",
    "description": "Boxes registered under both spellings before one box was one feed are relayed twice "
    "(alsoRegisteredAs names the other). The feed that stays goes on from whichever cursor is behind, as "
    "Diadoc counts the events after each, so nothing either feed had still to publish is lost; the events "
    "between the two cursors come again under the feed that stays. The other feed stops; both record who "
    "merged. A box already one feed answers as it is.",
    "tags": ["diadoc boxes"],
    "responses": responses(
        "The box, one feed",
        {
            400: BAD_ID,
            403: WHO,
            404: NOT_RELAYED,
            409: "The two read different filters; or Diadoc's counts cannot tell which cursor is behind; or "
            "the box kept changing",
            502: "Diadoc refused or failed the count",
            503: "Diadoc is throttling the relay",
            504: "Diadoc did not answer in time",
        },
    ),
}
DISCOVER: dict[str, Any] = {
    "summary": "The boxes the Diadoc credential can see, and which are relayed; optionally register the others",
    "description": "Asks Diadoc's GetMyOrganizations, always with autoRegister=false (its default would make "
    "the relay's user an administrator of every organisation it finds).",
    "tags": ["diadoc boxes"],
    "responses": responses(
        "The boxes",
        {
            403: WHO,
            502: "Diadoc refused the relay's credentials (the Diadoc secret), failed, or answered something unreadable",
            503: "Diadoc is throttling the relay",
            504: "Diadoc did not answer in time",
        },
    ),
}
