"""Diadoc's organisations, for ``GET /GetMyOrganizations``: each simulated box belongs to one.

An organisation's details are derived from its first box's id, not drawn from the simulator's RNG:
adding organisations leaves the seeded boxes and their traffic exactly as they were.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

from kontur_relay.feeds.diadoc import diadoc_events_pb2 as pb


@dataclass
class Organization:
    id: str
    inn: str
    kpp: str
    full_name: str
    box_ids: list[str] = field(default_factory=list)


def new_organization(first_box_id: str, title: str) -> Organization:
    rng = random.Random(first_box_id)
    return Organization(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        inn="".join(str(rng.randrange(10)) for _ in range(10)),
        kpp="".join(str(rng.randrange(10)) for _ in range(9)),
        full_name=title,
    )


def box_id_guid(box_id: str) -> str:
    """The GUID form of a box id: the simulator's ``…@diadoc.ru`` ids hold a GUID's 32 hex digits."""
    hex_digits = box_id.partition("@")[0].strip("{}")
    try:
        return str(uuid.UUID(hex_digits))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, box_id))


def organization_list(
    organizations: Iterable[Organization], visible: Container[str], titles: Mapping[str, str]
) -> bytes:
    """The ``OrganizationList`` a user who sees the boxes ``visible`` gets: each organisation in which
    it sees a box, with those boxes."""
    listed = []
    for organization in organizations:
        boxes = [
            pb.Box(BoxId=box, Title=titles[box], BoxIdGuid=box_id_guid(box))
            for box in organization.box_ids
            if box in visible
        ]
        if boxes:
            listed.append(
                pb.Organization(
                    OrgId=organization.id,
                    Inn=organization.inn,
                    Kpp=organization.kpp,
                    FullName=organization.full_name,
                    ShortName=organization.full_name,
                    Boxes=boxes,
                    IsActive=True,
                )
            )
    return pb.OrganizationList(Organizations=listed).SerializeToString()
