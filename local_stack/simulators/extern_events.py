"""Kontur.Extern's traffic, generated from a seeded RNG: accounts' organisations (INNs with valid
check digits), docflows of the usual types stepping through their states, and the events they log,
now and then with a key missing or one the relay has never heard of.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class DocflowKind:
    type: str
    weight: int
    #: The states a docflow goes through; a tuple offers alternatives, the first the likeliest.
    states: tuple[str | tuple[str, ...], ...]
    #: (knd, okud) of the forms sent in this docflow type; empty: none applies.
    forms: tuple[tuple[str | None, str | None], ...] = ()
    #: Replies refer to the docflow they answer (``related-docflow-id``).
    related: bool = False


T = "urn:transaction:"
KINDS: tuple[DocflowKind, ...] = (
    DocflowKind(
        "urn:docflow:fns534-report",
        40,
        (
            f"{T}report",
            f"{T}submission-confirmation",
            f"{T}reception-notice",
            (f"{T}acceptance-result-positive", f"{T}acceptance-result-negative"),
        ),
        (("1151001", None), ("1151006", None), ("1151111", None), ("1152017", None)),
    ),
    DocflowKind(
        "urn:docflow:fns534-demand",
        12,
        (f"{T}document", f"{T}document-receipt", (f"{T}demand-reply", f"{T}demand-refusal")),
        (("1160001", None), ("1165050", None)),
    ),
    DocflowKind(
        "urn:docflow:pfr-report",
        15,
        (f"{T}report", f"{T}submission-confirmation", (f"{T}protocol-positive", f"{T}protocol-negative")),
    ),
    DocflowKind(
        "urn:docflow:stat-report",
        12,
        (f"{T}report", f"{T}submission-confirmation", (f"{T}acceptance-result-positive", f"{T}report-notice")),
        ((None, "0601013"), (None, "0606010"), (None, "0610001")),
    ),
    DocflowKind("urn:docflow:fss-sedo-sick-report-change-notification", 6, (f"{T}document",)),
    DocflowKind(
        "urn:docflow:fss-sedo-proactive-payments-reply",
        4,
        (f"{T}document", (f"{T}receipt-positive", f"{T}receipt-negative")),
        related=True,
    ),
    DocflowKind(
        "urn:docflow:cbrf-report",
        5,
        (f"{T}report", f"{T}submission-confirmation", f"{T}acceptance-result-positive"),
        ((None, "0409101"), (None, "0409115")),
    ),
)


@dataclass(frozen=True)
class Organisation:
    inn: str
    kpp: str | None


@dataclass(frozen=True)
class Account:
    id: str
    #: The administrator, a user of the identity simulator, who shares the account's events.
    admin: str
    password: str
    organisations: tuple[Organisation, ...]


@dataclass
class Docflow:
    account: Account
    organisation: Organisation
    kind: DocflowKind
    id: str
    form: tuple[str | None, str | None] | None
    states: list[str]
    related: str | None = None
    step: int = 0


class DocflowGenerator:
    """The next event of the accounts' docflows. It shares the simulator's RNG, so that one seed
    fixes accounts, publishers and traffic; the simulator calls it under its lock."""

    def __init__(self, rng: random.Random, *, link_base: str, realtime_dates: bool) -> None:
        self.rng = rng
        self.link_base = link_base
        #: The trickle happens now; without this, events are dated from a moment that moves on.
        self.realtime_dates = realtime_dates
        self._docflows: list[Docflow] = []
        self._moment = datetime(2024, 3, 25, 6, 0, tzinfo=UTC) + timedelta(seconds=self.rng.randrange(86400))

    def now(self) -> datetime:
        return datetime.now(UTC) if self.realtime_dates else self._moment

    def next_event(self, accounts: Mapping[str, Account]) -> tuple[Account, Docflow, dict[str, Any]]:
        rng = self.rng
        if not self._docflows or (len(self._docflows) < 60 and rng.random() < 0.35):
            docflow = self._new_docflow(accounts)
            self._docflows.append(docflow)
        else:
            docflow = rng.choice(self._docflows)
        state = docflow.states[docflow.step]
        docflow.step += 1
        if docflow.step == len(docflow.states):
            self._docflows.remove(docflow)

        self._moment += timedelta(seconds=rng.uniform(0.05, 120))
        moment = self.now()
        if rng.random() < 0.03:
            moment -= timedelta(seconds=rng.uniform(1, 600))  # the feed's order is not the events' time order
        account = docflow.account
        event: dict[str, Any] = {
            "account-id": account.id,
            "docflow-id": docflow.id,
            "docflow-type": docflow.kind.type,
            "new-state": state,
            "event-date-time": self.timestamp(moment),
            "inn": docflow.organisation.inn,
            "kpp": docflow.organisation.kpp,
            "docflow-link": {
                "href": f"{self.link_base}/v1/{account.id}/docflows/{docflow.id}",
                "rel": "docflow",
                "name": None,
                "title": None,
                "profile": None,
                "templated": False,
            },
            "related-docflow-id": docflow.related,
            "related-document-id": self.guid() if docflow.related and rng.random() < 0.5 else None,
        }
        roll = rng.random()
        if roll < 0.04:
            del event[rng.choice(("related-docflow-id", "related-document-id", "docflow-link", "kpp"))]
        elif roll < 0.08:
            event["organization-id"] = self.guid()  # a key this relay has never heard of
        return account, docflow, event

    def _new_docflow(self, accounts: Mapping[str, Account]) -> Docflow:
        rng = self.rng
        account = rng.choice(list(accounts.values()))
        kind = rng.choices(KINDS, weights=[k.weight for k in KINDS])[0]
        states = [s if isinstance(s, str) else s[0] if rng.random() < 0.85 else rng.choice(s[1:]) for s in kind.states]
        return Docflow(
            account=account,
            organisation=rng.choice(account.organisations),
            kind=kind,
            id=self.guid(),
            form=rng.choice(kind.forms) if kind.forms else None,
            states=states,
            related=self.guid() if kind.related else None,
        )

    def organisation(self) -> Organisation:
        region = self.rng.choice(("66", "77", "78", "50", "16", "54"))
        if self.rng.random() < 0.25:  # an individual entrepreneur: 12 digits, no kpp
            return Organisation(_inn(self.rng, region, 12), None)
        inn = _inn(self.rng, region, 10)
        return Organisation(inn, f"{inn[:4]}01001")

    def guid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def timestamp(self, moment: datetime) -> str:
        """Extern's format: seven fractional digits (.NET ticks) and Z."""
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}{self.rng.randrange(10)}Z"


def _inn(rng: random.Random, region: str, digits: int) -> str:
    """An INN with valid check digits: 10 for companies, 12 for individuals."""
    body = [int(c) for c in region] + [rng.randrange(10) for _ in range(digits - 3 if digits == 10 else digits - 4)]

    def check(numbers: Sequence[int], weights: Sequence[int]) -> int:
        return sum(n * w for n, w in zip(numbers, weights, strict=False)) % 11 % 10

    if digits == 10:
        body.append(check(body, (2, 4, 10, 3, 5, 9, 4, 6, 8)))
    else:
        body.append(check(body, (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)))
        body.append(check(body, (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)))
    return "".join(map(str, body))
