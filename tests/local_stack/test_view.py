"""The live view as a terminal shows it: an 80x24 terminal keeps the feed table (the header folds
away first), a large one shows everything, and no line is wider than the view."""

from __future__ import annotations

import io
import re
import time

import pytest

from local_stack.queues import Received
from local_stack.view import WIDTH, FeedRow, LiveView, QueueRow, Snapshot, render

BOXES = ("099950d836f645cc81e74ef5e8e25d94@diadoc.ru", "6513270e269e4d37b2a74de452e6b438@diadoc.ru")
#: What ``make run`` puts above the table, as long as it is.
HEADER = [
    "AWS: DynamoDB Local and moto on 127.0.0.1 (moto at http://127.0.0.1:40113)",
    "Kontur: Extern API http://127.0.0.1:39611, identity http://127.0.0.1:41005 (tokens live 300s)",
    "  3 accounts share everything with the relay, 1 only fns534 reports, 1 only with another integrator; "
    "backlog 300, then traffic every 0.25s",
    "Diadoc: API http://127.0.0.1:46241 (DiadocAuth)",
    f"  box {BOXES[0]} whole, box {BOXES[1]} inbound letters only, one more box not relayed; "
    "backlog 300 each, then traffic every 0.25s",
    "demo queues: kontur-feed-relay-local-demo-all, kontur-feed-relay-local-demo-extern-filtered, "
    "kontur-feed-relay-local-demo-diadoc-filtered",
    "clock x30: ExternPollerFunction every 2s, DiadocPollerFunction every 2s; timeouts DiadocPollerFunction 10s, "
    "ExternPollerFunction 10s",
    "  try share-events: account 7e62aa0a-1df9-4d78-9c65-39382b0537e6 shares nothing yet; its administrator's "
    "token is hagLaW_NNKbKUjyWvZiqqxb5FdpwJwt9eQz7RmapdBI (lives 300s):",
    "    awscurl --service execute-api -X POST -H 'X-Kontur-Authorization: Bearer "
    "hagLaW_NNKbKUjyWvZiqqxb5FdpwJwt9eQz7RmapdBI' "
    "http://127.0.0.1:37351/Prod/accounts/7e62aa0a-1df9-4d78-9c65-39382b0537e6/share-events",
    "  boxes registered with PUT http://127.0.0.1:37351/Prod/diadoc/boxes/{boxId}; list them with GET …/diadoc/boxes",
    "endpoints for scripts: .local/endpoints.json",
    "admin API (sign requests with SigV4, e.g. awscurl): http://127.0.0.1:37351/Prod",
]


def row(feed: str, error: str | None = None) -> FeedRow:
    return FeedRow(
        feed=feed,
        cursor="bSBz2Svb7S9G25/DlDEUVTs2bwQ=",
        relayed=123456,
        rate=1234.5,
        backlog=100000,
        backlog_capped=True,
        last_error=error,
        stopped_reason=None,
        running=True,
        runs=12345,
        failed_runs=999,
        last_outcome=None,
    )


def message(number: int) -> Received:
    return Received(
        queue="all",
        feed=f"diadoc:{BOXES[0]}",
        id=f"d7ddeaf6-18e4-4043-a5bd-{number:012d}",
        type="ru.kontur.diadoc.message",
        subject="70c5758b-3f93-436c-9b05-69ab97cc61c8",
        attributes={"feed": f"diadoc:{BOXES[0]}", "message_type": "Letter", "box_id": BOXES[0]},
        at=time.time(),
    )


SNAPSHOT = Snapshot(
    phase="running 21s of 30s",
    header=HEADER,
    feeds=[
        row("extern", "FeedUnavailable: Kontur answered 503 three times: Service Unavailable " * 3),
        row("diadoc"),
        *(row(f"diadoc:{box}") for box in BOXES),
    ],
    queues=[
        QueueRow("all", "no filter", 965, 965, 0),
        QueueRow(
            "extern-filtered", 'filter {"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]}', 1, 2, 3
        ),
        QueueRow("diadoc-filtered", 'filter {"source": ["diadoc"], "message_type": ["Letter"]}', 4, 5, 6),
    ],
    messages=[message(number) for number in range(8)],
    footer=["handler logs: .local/logs/<function>.log; Ctrl-C stops"],
)


def screen(monkeypatch: pytest.MonkeyPatch, columns: int, lines: int) -> list[str]:
    """The frame the live view draws on a terminal of this size, its escape sequences taken out."""
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("LINES", str(lines))
    out = io.StringIO()
    LiveView(out, tty=True).show(SNAPSHOT)
    return re.sub(r"\x1b\[\d*[A-Za-z]", "", out.getvalue()).splitlines()


def test_an_80x24_terminal_keeps_the_feed_table_and_folds_the_header(monkeypatch):
    frame = screen(monkeypatch, 80, 24)

    assert len(frame) < 24, "the last line stays free for the cursor"
    assert max(len(line) for line in frame) <= WIDTH
    text = "\n".join(frame)
    assert frame[0] == "Kontur Feed Relay, local stack: running 21s of 30s"
    assert re.search(r"^feed +cursor +relayed +rate/s +backlog +runs$", text, re.MULTILINE), text
    for feed in ("extern", "diadoc", "diadoc:099…4@diadoc.ru", "diadoc:651…8@diadoc.ru"):
        assert re.search(rf"^{feed} +bSBz2Svb7S9… +123456", text, re.MULTILINE), text
    assert "FeedUnavailable: Kontur answered 503" in text
    assert "queue all" in text
    assert ".local/endpoints.json" in text, "where the folded header's endpoints are"
    assert "awscurl" not in text


def test_a_large_terminal_shows_everything(monkeypatch):
    frame = screen(monkeypatch, 200, 60)

    text = "\n".join(frame)
    assert all(len(line) <= WIDTH or "://" in line for line in frame), "only a URL goes past the view's width"
    for needle in ("moto at http://127.0.0.1:40113", "awscurl", "queue diadoc-filtered", "Ctrl-C stops"):
        assert needle in text
    assert len([line for line in frame if re.match(r"  \d\d:\d\d:\d\d all ", line)]) == 8, "the eight latest messages"


def test_the_live_view_fits_80_columns():
    snapshot = Snapshot(
        phase="traffic stopped; catching up 12s",
        header=[
            "Kontur: Extern API http://127.0.0.1:39611, identity http://127.0.0.1:41005 (tokens live 300s)",
            "  3 accounts share everything with the relay, 1 only fns534 reports, 1 only with another integrator; "
            "backlog 400, then traffic every 0.5s, faults on 20% of requests",
        ],
        feeds=[
            row("extern", "FeedUnavailable: Kontur answered 503 three times: Service Unavailable " * 3),
            row("diadoc:099950d836f645cc81e74ef5e8e25d94@diadoc.ru"),
        ],
        queues=[
            QueueRow(
                "extern-filtered", '{"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]}', 1, 2, 3
            )
        ],
        messages=[
            Received(
                queue="diadoc-filtered",
                feed="diadoc:099950d836f645cc81e74ef5e8e25d94@diadoc.ru",
                id="d7ddeaf6-18e4-4043-a5bd-0315dd22ce85",
                type="ru.kontur.diadoc.message",
                subject="70c5758b-3f93-436c-9b05-69ab97cc61c8",
                attributes={"feed": "diadoc:0999@diadoc.ru", "message_type": "Letter", "box_id": "0999@diadoc.ru"},
                at=time.time(),
            )
        ],
        footer=["handler logs: .local/logs/<function>.log; Ctrl-C stops"],
    )
    lines = render(snapshot)
    assert max(len(line) for line in lines) <= WIDTH, [line for line in lines if len(line) > WIDTH]
    text = "\n".join(lines)
    assert "diadoc:0999" in text
    assert "@diadoc.ru" in text
    assert "http://127.0.0.1:41005" in text, "a URL is never cut"
    assert "FeedUnavailable: Kontur answered 503" in text
