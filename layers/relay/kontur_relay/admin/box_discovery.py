"""What ``POST /diadoc/boxes/discover`` takes and answers: every box the Diadoc credential sees, and
which of them the request registered or could not (``box_registration.discover`` does the work).
"""

from __future__ import annotations

from pydantic import Field

from kontur_relay.admin.problems import CamelModel, StrictInput


class Discover(StrictInput):
    # Not named ``register``: pydantic's models already have that attribute (ABCMeta.register).
    register_new: bool = Field(
        default=False,
        alias="register",
        strict=True,
        description="Also register, with the default settings, every box not relayed yet",
    )


class VisibleBox(CamelModel):
    box_id: str = Field(description="The `…@diadoc.ru` id, canonical (the GUID form when Diadoc gives no other)")
    box_id_guid: str | None
    title: str | None
    organization: str | None
    inn: str | None
    kpp: str | None
    relayed: bool = Field(description="Registered (after this request's registrations)")


class Skipped(CamelModel):
    box_id: str
    reason: str


class Discovered(CamelModel):
    boxes: list[VisibleBox] = Field(description="Every box of every organisation the Diadoc credential belongs to")
    registered: list[str] = Field(description="The boxes this request registered")
    skipped: list[Skipped] = Field(description="Boxes `register` could not register, and why")
