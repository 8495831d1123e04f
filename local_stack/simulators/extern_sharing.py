"""Who sees what of Extern's log: the publishers (an account sharing its events with one subscriber,
maybe filtered) and the log's entries they cover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from local_stack.simulators.extern_events import Account


@dataclass
class Publisher:
    """An account sharing its events with one subscriber (integrator)."""

    id: str
    account_id: str
    subscriber: str
    shared_by: str
    docflow_types: frozenset[str] | None
    forms: tuple[tuple[str | None, str | None], ...] | None
    #: The log offset from which the account's events are in the subscriber's feed.
    since: int
    created: str
    active: bool = True

    def covers(self, entry: Entry) -> bool:
        if not self.active or entry.offset < self.since or entry.account_id != self.account_id:
            return False
        if self.docflow_types is not None and entry.docflow_type not in self.docflow_types:
            return False
        if self.forms is None:
            return True
        return entry.form is not None and any(
            (knd is None or knd == entry.form[0]) and (okud is None or okud == entry.form[1])
            for knd, okud in self.forms
        )

    def as_json(self, accounts: Mapping[str, Account]) -> dict[str, Any]:
        account = accounts[self.account_id]
        events_filter = None
        if self.docflow_types is not None or self.forms is not None:
            events_filter = {
                "docflow-types": sorted(self.docflow_types) if self.docflow_types is not None else None,
                "document-forms": [{"knd": k, "okud": o} for k, o in self.forms] if self.forms is not None else None,
            }
        return {
            "id": self.id,
            "account-id": self.account_id,
            "shared-by": self.shared_by,
            "organizations": [{"inn": o.inn, "kpp": o.kpp} for o in account.organisations],
            "events-filter": events_filter,
            "created-date-time": self.created,
        }


@dataclass(frozen=True)
class Entry:
    offset: int
    length: int
    account_id: str
    docflow_type: str
    form: tuple[str | None, str | None] | None
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.event["id"])


def parse_events_filter(value: Any) -> tuple[list[str] | None, list[tuple[str | None, str | None]] | None]:
    """``events-filter`` of a share-events body: (docflow types, (knd, okud) forms); None is no filter."""
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    types = value.get("docflow-types")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) and t for t in types)):
        raise ValueError("docflow-types must be a list of URNs")
    forms = value.get("document-forms")
    parsed: list[tuple[str | None, str | None]] | None = None
    if forms is not None:
        if not isinstance(forms, list):
            raise ValueError("document-forms must be a list")
        parsed = []
        for form in forms:
            if not isinstance(form, dict) or not (form.get("knd") or form.get("okud")):
                raise ValueError("each document form needs knd or okud")
            knd, okud = form.get("knd"), form.get("okud")
            if not all(v is None or isinstance(v, str) for v in (knd, okud)):
                raise ValueError("knd and okud are strings")
            parsed.append((knd, okud))
    return types, parsed
