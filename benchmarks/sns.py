"""SNS as the relay meets it in AWS: a server elsewhere that answers every call after its round trip.

moto's server is a faithful SNS, but it spends ~2 ms of its one interpreter per message: on a
2-core machine it caps any publisher near 450 events/s, which AWS does not. This stand-in does what
AWS's side of a call costs a client (the round trip) and nothing else: it takes every entry of a
PublishBatch (or the one message of a Publish) and answers as SNS does, over HTTP, in a process of
its own. The client's whole share (serializing, signing, sending, parsing) stays in the client.
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


class SnsStandIn(Simulator):
    name = "sns-stand-in"

    def __init__(self, round_trip: float) -> None:
        super().__init__()
        self.load.latency = round_trip
        self.route("POST", "/", self._answer)

    def _answer(self, request: Request) -> Response:
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


def _xml(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/xml"})


def serve_sns(endpoint: Connection, stop: Event, round_trip: float) -> None:
    with SnsStandIn(round_trip) as server:
        endpoint.send(server.url)
        stop.wait()
