"""The boxes a Diadoc credential can see: ``GET /GetMyOrganizations``, always ``autoRegister=false``.

Diadoc's default (``autoRegister=true``) registers the calling user in the organisations it finds
and makes it their administrator: a relay that only reads must never cause that, so the parameter
is sent on every call rather than left to a default.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from kontur_relay.domain.errors import MalformedPage
from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb
from kontur_relay.feeds.diadoc.boxes import box_id
from kontur_relay.feeds.diadoc.source import PROTOBUF, DiadocApi, read_diadoc_error
from kontur_relay.observability import logger

PATH = "/GetMyOrganizations"


@dataclass(frozen=True)
class VisibleBox:
    """A box the credential sees, and whose it is."""

    #: Canonical (``feeds.diadoc.boxes.box_id``): the ``…@diadoc.ru`` form, the one feeds are named by,
    #: or the GUID form when Diadoc gives no other.
    box_id: str
    box_id_guid: str | None
    title: str | None
    organization: str | None
    inn: str | None
    kpp: str | None


class DiadocOrganizations:
    def __init__(self, api: DiadocApi) -> None:
        self.api = api

    def boxes(self) -> list[VisibleBox]:
        """Every box of every organisation the credential belongs to. Raises the FeedErrors of
        DiadocApi (FeedStopped for 402/403, FeedAuthError, FeedUnavailable, ...) and MalformedPage."""
        response = self.api.request("GET", PATH, params={"autoRegister": "false"}, headers={"Accept": PROTOBUF})
        if "html" in response.headers.get("Content-Type", "").lower():
            details = read_diadoc_error(response)
            raise MalformedPage(f"Diadoc answered {PATH} with {details.message} instead of protobuf")
        try:
            organizations = pb.OrganizationList.FromString(response.content)
        except DecodeError as error:
            raise MalformedPage(f"Diadoc's answer to {PATH} is not an OrganizationList: {error}") from error
        found: dict[str, VisibleBox] = {}
        for organization in organizations.Organizations:
            for box in organization.Boxes:
                visible = _visible(organization, box)
                if visible is not None:
                    # A box listed under two organisations is still one box.
                    found.setdefault(visible.box_id, visible)
        return list(found.values())


def _visible(organization: pb.Organization, box: pb.Box) -> VisibleBox | None:
    guid = _canonical(box.BoxIdGuid)
    canonical = _canonical(box.BoxId) or guid
    if canonical is None:
        # Nothing to name a feed by; the other boxes are still worth listing.
        logger.warning("Diadoc listed a box without a usable id", extra={"box_id": box.BoxId, "guid": box.BoxIdGuid})
        return None
    return VisibleBox(
        box_id=canonical,
        box_id_guid=guid,
        title=box.Title or None,
        organization=organization.ShortName or organization.FullName or None,
        inn=organization.Inn or None,
        kpp=organization.Kpp or None,
    )


def _canonical(raw: str) -> str | None:
    try:
        return box_id(raw) if raw else None
    except ValueError:
        return None
