"""The README's replay on a running ``make run``: every feed's cursor put back to its start once the
backlog was relayed. On a 2-core machine the whole history is published again while traffic goes
on; the stack must stay up under it: every poller run ends inside its Timeout, the feeds catch up
again, and an AWS call made meanwhile is answered as fast as a script would expect.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.exceptions import BotoCoreError

from local_stack.admin_client import AdminClient
from local_stack.constants import REGION
from local_stack.endpoints import ENDPOINTS
from tests.local_stack.harness import StackRun, checks, survivors

pytestmark = pytest.mark.slow

#: Events in each feed (each Diadoc box) before the first run.
BACKLOG = 300


class Latency:
    """A script's AWS call (SNS ListTopics) every half second, timed: how moto answers meanwhile."""

    def __init__(self, endpoint: str) -> None:
        self.sns = boto3.client(
            "sns", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="local", aws_secret_access_key="local"
        )
        self.calls: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            began = time.monotonic()
            try:
                self.sns.list_topics()
            except BotoCoreError:
                return  # the stack stopped
            self.calls.append((began, time.monotonic() - began))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def figures(self, since: float, until: float) -> str:
        taken = sorted(seconds for began, seconds in self.calls if since <= began < until)
        if not taken:
            return "no call"
        return (
            f"{len(taken)} calls, median {statistics.median(taken) * 1000:.0f} ms, "
            f"90th percentile {taken[int(len(taken) * 0.9)] * 1000:.0f} ms, longest {taken[-1] * 1000:.0f} ms"
        )


def relayed_backlog(admin: AdminClient) -> list[dict[str, Any]] | None:
    """The feeds once every one has relayed its backlog (Extern: BACKLOG events; a box: none left)."""
    status, answer = admin.call("GET", "/feeds")
    assert status == 200, answer
    feeds = [feed for feed in answer["feeds"] if feed["feed"] != "diadoc"]
    boxes = [feed for feed in feeds if feed["feed"].startswith("diadoc:")]
    extern = [feed for feed in feeds if feed["feed"] == "extern"]
    extern_done = bool(extern) and extern[0]["eventsRelayed"] >= BACKLOG
    boxes_done = len(boxes) == 2 and all(box["backlog"] == 0 and box["eventsRelayed"] > 0 for box in boxes)
    return feeds if extern_done and boxes_done else None


def rewind(admin: AdminClient, feed: str, cursor: str | None) -> dict[str, Any]:
    """Put the feed's cursor back, as an operator does: read its version, send it; read again when a
    run moved the cursor meanwhile (409). The feed as it was just before."""
    path = f"/feeds/{quote(feed, safe='')}"
    for _ in range(10):
        status, before = admin.call("GET", path)
        assert status == 200, before
        status, answer = admin.call("PUT", f"{path}/cursor", {"cursor": cursor, "expectedVersion": before["version"]})
        if status == 200:
            return dict(before)
        assert status == 409, answer
    raise AssertionError(f"{feed}: the cursor kept moving under ten attempts to set it")


def test_a_replay_from_the_start_catches_up_with_every_run_inside_its_timeout():
    # The default clock (x30), as a user runs it: a poller's 300 s Timeout is 10 s here.
    with StackRun("--duration", "70", "--backlog", str(BACKLOG), period=False, timeout=280) as run:
        run.wait_for(r"^\[running")
        # As a script finds the stack: its ports are new each run.
        endpoints = json.loads(ENDPOINTS.read_text())
        admin = AdminClient(endpoints["adminUrl"])
        latency = Latency(endpoints["aws"]["sns"])
        deadline = time.monotonic() + 60
        while (feeds := relayed_backlog(admin)) is None:
            assert time.monotonic() < deadline, f"the backlog was not relayed within 60 s:\n{run.text}"
            time.sleep(1)
        rewound_at = time.monotonic()
        # The README's replay: Extern from its first event, each box from where it started.
        rewound = [rewind(admin, feed["feed"], "0_0" if feed["feed"] == "extern" else None) for feed in feeds]
        code, text = run.finish()
        latency.stop()

    print(f"moto before the replay: {latency.figures(0, rewound_at)}")
    print(f"moto from the replay on: {latency.figures(rewound_at, time.monotonic())}")
    print("\n".join(line for line in text.splitlines() if "Function: runs took" in line))
    assert code == 0, text
    for function in ("ExternPollerFunction", "DiadocPollerFunction"):
        assert re.search(rf"{function}: \d+ runs, 0 failed \(0 timed out\)", text), text
    # Caught up again: every event relayed before the rewind arrived a second time.
    before = {"extern": 0, "diadoc": 0}
    for feed in rewound:
        before[feed["feed"].partition(":")[0]] += feed["eventsRelayed"]
    for kit, relayed in before.items():
        found = re.search(rf"{kit} on \S+-demo-all: \d+ messages, \d+ distinct events, (\d+) duplicates", text)
        assert found, text
        assert int(found.group(1)) >= relayed, (kit, relayed, text)
    assert all(missing == 0 for _, _, missing in checks(text).values()), text
    assert survivors(run.marker) == []
    assert not ENDPOINTS.exists()
