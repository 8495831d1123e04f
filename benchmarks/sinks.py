"""Every sink as the relay meets it in AWS: a server elsewhere that answers every call after its
round trip and takes every entry.

moto's server is a faithful SNS, but it spends ~2 ms of its one interpreter per message: on a
2-core machine it caps any publisher near 450 events/s, which AWS does not. This stand-in does what
the sink's side of a call costs a client (the round trip) and nothing else, over HTTP, in a process
of its own: SNS's PublishBatch and Publish (query protocol), EventBridge's PutEvents and SQS's
SendMessageBatch and GetQueueAttributes (JSON protocol, told apart by ``X-Amz-Target``), and a
webhook receiver's 204 at ``/events``. The client's whole share (serializing, signing, sending,
parsing) stays in the client.
"""

from __future__ import annotations

import re
import uuid
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from local_stack.simulators.base import Request, Response, Simulator

_ENTRY_ID = re.compile(rb"PublishBatchRequestEntries\.member\.\d+\.Id=([^&]*)")
_ACTION = re.compile(rb"(?:^|&)Action=(\w+)")
_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
#: Where the webhook sink posts.
WEBHOOK_PATH = "/events"


class SinkStandIn(Simulator):
    name = "sink-stand-in"

    def __init__(self, round_trip: float) -> None:
        super().__init__()
        self.load.latency = round_trip
        self.route("POST", "/", self._answer)
        self.route("POST", WEBHOOK_PATH, lambda request: Response(204))

    def _answer(self, request: Request) -> Response:
        target = request.header("X-Amz-Target")
        if target is not None:
            return _json(target.rpartition(".")[2], request)
        action = _ACTION.search(request.body)
        name = action.group(1).decode() if action else "none"
        if name == "PublishBatch":
            members = "".join(
                f"<member><Id>{entry.decode()}</Id><MessageId>{uuid.uuid4()}</MessageId></member>"
                for entry in _ENTRY_ID.findall(request.body)
            )
            result = f"<Successful>{members}</Successful><Failed/>"
        elif name == "Publish":
            result = f"<MessageId>{uuid.uuid4()}</MessageId>"
        else:
            return _xml(
                f"<ErrorResponse><Error><Code>InvalidAction</Code><Message>{name}</Message></Error></ErrorResponse>",
                400,
            )
        return _xml(
            f'<{name}Response xmlns="{_XMLNS}"><{name}Result>{result}</{name}Result>'
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{name}Response>"
        )


def _json(operation: str, request: Request) -> Response:
    """EventBridge's and SQS's answers: every entry taken."""
    body = request.json()
    if operation == "PutEvents":
        entries = [{"EventId": str(uuid.uuid4())} for _ in body["Entries"]]
        return _amz_json({"FailedEntryCount": 0, "Entries": entries})
    if operation == "SendMessageBatch":
        taken = [
            {"Id": entry["Id"], "MessageId": str(uuid.uuid4()), "MD5OfMessageBody": ""} for entry in body["Entries"]
        ]
        return _amz_json({"Successful": taken, "Failed": []})
    if operation == "GetQueueAttributes":
        return _amz_json({"Attributes": {"MaximumMessageSize": "262144"}})
    return _amz_json({"__type": "InvalidAction", "message": operation}, 400)


def _amz_json(value: object, status: int = 200) -> Response:
    answer = Response.json(value, status)
    answer.headers["Content-Type"] = "application/x-amz-json-1.1"
    return answer


def _xml(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/xml"})


def serve_sinks(endpoint: Connection, stop: Event, round_trip: float) -> None:
    with SinkStandIn(round_trip) as server:
        endpoint.send(server.url)
        stop.wait()
