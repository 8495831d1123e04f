"""Faults a sink's transport meets, injected by fakes around the real thing, never by mocking calls.

``Faults`` is a plan numbered by call (each PutEvents, PublishBatch, SendMessageBatch or webhook
request is one call): the process dies before a call is sent or after its answer came (``Crash``),
the client gives up on throttling after its own retries, or the sink refuses some entries of a call
and takes the rest. ``FaultyClient`` wraps a real boto3 client (moto's) and answers the refused
entries as the service does, in its own format: the rest go to the real service.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from tests.fakes import Crash


@dataclass(frozen=True)
class Refusal:
    code: str
    #: The sender's fault: sending it again cannot help.
    final: bool = False


@dataclass
class Faults:
    crash_before: set[int] = field(default_factory=set)
    crash_after: set[int] = field(default_factory=set)
    throttled: set[int] = field(default_factory=set)
    #: (call number, event id) -> why the sink refuses that entry; None: it takes it.
    refuse: Callable[[int, str], Refusal | None] | None = None
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self) -> int:
        """The number of the call beginning now; raises what the plan has for its beginning."""
        with self._lock:
            self.calls += 1
            number = self.calls
        if number in self.crash_before:
            raise Crash(f"killed before call {number}")
        return number

    def refusal(self, number: int, event_id: str | None) -> Refusal | None:
        return None if self.refuse is None or event_id is None else self.refuse(number, event_id)

    def ended(self, number: int) -> None:
        if number in self.crash_after:
            raise Crash(f"killed after call {number} was answered")


def event_id(body: str) -> str | None:
    """The CloudEvent id of a message body (None for a pointer to an offloaded one)."""
    value = json.loads(body)
    if isinstance(value, dict) and "event" in value:  # an EventBridge detail
        value = value["event"]
    return value.get("id") if isinstance(value, dict) else None


#: Per operation: where its entries are, each entry's body, and how the service reports a refusal.
OPERATIONS: dict[str, tuple[str, str, str]] = {
    "publish_batch": ("PublishBatchRequestEntries", "Message", "by_id"),
    "send_message_batch": ("Entries", "MessageBody", "by_id"),
    "put_events": ("Entries", "Detail", "positional"),
}


class FaultyClient:
    """A boto3 client whose batch operation goes through ``faults``; everything else is the client's."""

    def __init__(self, client: Any, operation: str, faults: Faults) -> None:
        self._client = client
        self._operation = operation
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        if name == self._operation:
            return self._call
        return getattr(self._client, name)

    def _call(self, **request: Any) -> Any:
        key, body, shape = OPERATIONS[self._operation]
        number = self._faults.call()
        if number in self._faults.throttled:
            error: Any = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, self._operation)  # what boto3 raises once its own retries are spent
        entries = request[key]
        refusals = [self._faults.refusal(number, event_id(entry[body])) for entry in entries]
        sent = [entry for entry, refusal in zip(entries, refusals, strict=True) if refusal is None]
        real = getattr(self._client, self._operation)
        answer = dict(real(**{**request, key: sent})) if sent else {}
        self._faults.ended(number)
        if shape == "by_id":
            answer["Failed"] = [
                *answer.get("Failed", []),
                *(
                    {"Id": entry["Id"], "Code": refusal.code, "Message": "injected", "SenderFault": refusal.final}
                    for entry, refusal in zip(entries, refusals, strict=True)
                    if refusal is not None
                ),
            ]
            answer.setdefault("Successful", [])
            return answer
        # PutEvents answers one entry per request entry, in order.
        taken = iter(answer.get("Entries", []))
        answer["Entries"] = [
            next(taken) if refusal is None else {"ErrorCode": refusal.code, "ErrorMessage": "injected"}
            for refusal in refusals
        ]
        answer["FailedEntryCount"] = sum(1 for entry in answer["Entries"] if "ErrorCode" in entry)
        return answer


class FaultyHttp:
    """The webhook's connection pool, with the plan's crashes around each request (the receiver's
    own faults, 5xx, 429 and slowness, are the receiver's)."""

    def __init__(self, http: Any, faults: Faults) -> None:
        self._http = http
        self._faults = faults

    def request(self, *args: Any, **kwargs: Any) -> Any:
        number = self._faults.call()
        answer = self._http.request(*args, **kwargs)
        self._faults.ended(number)
        return answer
