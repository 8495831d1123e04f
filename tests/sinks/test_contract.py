"""The contract every sink keeps, run against each (``harness.SINKS``): SNS, EventBridge and SQS
through moto's APIs, the webhook through a local receiver that verifies every signature. A new sink
is done when this suite passes with it in ``SINKS``.

What a consumer of any sink relies on: every event arrives at least once, a crash at any step of a
page notwithstanding, as a CloudEvent that carries the trace of the run that relayed it; an ordered
sink keeps each group (FIFO) or feed (the webhook) in order; an event over the sink's own limit
arrives as a pointer to its exact bytes; the filter fields reach the consumer; entries the sink
refuses are sent again until taken, and when they never are, the page fails and the cursor waits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest

from kontur_relay.domain.engine import Outcome, Relay
from kontur_relay.domain.errors import PublishError
from kontur_relay.domain.lease import LEASE_SECONDS
from kontur_relay.domain.model import Feed, FeedEvent
from kontur_relay.observability import begin_run_trace, metrics
from kontur_relay.sinks import message as sink_message
from tests.fakes import Crash, FakeClock, FakeCursorStore, FakeSource, offset_of
from tests.sinks.faults import Refusal
from tests.sinks.harness import ORDERED, SINKS, Harness, harness

pytestmark = pytest.mark.slow

EXTERN = Feed(id="extern", kind="extern", source_uri="https://extern-api.test/v1/events")


@pytest.fixture(params=SINKS)
def sink(request: pytest.FixtureRequest, aws) -> Iterator[Harness]:
    built = harness(request.param, aws)
    yield built
    built.close()
    metrics.clear_metrics()


def relay(sink: Harness, source: FakeSource, store: FakeCursorStore, clock: FakeClock, feed: Feed = EXTERN) -> Relay:
    return Relay(feed, source, sink.publisher(), store, safety_margin=30, clock=clock)


def run(relay_: Relay, clock: FakeClock) -> Outcome:
    deadline = clock() + 300
    return relay_.run(lambda: deadline - clock()).outcome


def events(count: int, *, groups: int = 7, pad: int = 0, prefix: str = "ev") -> list[FeedEvent]:
    return [
        FeedEvent(
            id=f"{prefix}{index:06d}",
            type="ru.kontur.extern.docflow-event",
            data={"id": f"{prefix}{index:06d}", "n": index, "pad": "ж" * pad},
            attributes={"docflow_type": "urn:docflow:fns534-report" if index % 2 else "urn:docflow:stat-report"},
            ordering_key=f"docflow-{index % groups}",
        )
        for index in range(count)
    ]


# -- delivery, envelope, trace -------------------------------------------------------------------


def test_every_event_arrives_as_a_cloud_event_carrying_the_trace_of_the_run(sink: Harness) -> None:
    trace = begin_run_trace()
    page = events(23)

    sink.publisher().publish(EXTERN, page)

    received = sink.received()
    assert sorted(m.event["id"] for m in received) == [e.id for e in page]
    for message in received:
        assert message.event["source"] == EXTERN.source_uri
        assert message.event["traceparent"] == trace.traceparent
    if sink.name == "webhook":
        assert {d.traceparent for d in sink.receiver.deliveries} == {trace.traceparent}  # type: ignore[attr-defined]


# -- at least once, a crash at any step ----------------------------------------------------------

#: Where a run dies: before a call to the sink is sent, after its answer came, or around a cursor write.
STEPS = ("before_call", "after_call", "before_cursor_write", "after_cursor_write")


def crash(sink: Harness, step: str, number: int) -> bool:
    """A feed of 20 events in pages of 10 relayed with a crash at ``step`` ``number`` (the call to the
    sink, or the page's cursor write), then relayed again; whether the crash happened at all."""
    clock = FakeClock()
    source = FakeSource(20, page_size=10)
    store = FakeCursorStore(clock=clock)

    def witness(feed: str, position: str | None) -> None:
        # The consumer has every event the cursor is about to pass: the sink had taken them.
        missing = set(source.ids[: offset_of(position)]) - set(sink.ids())
        assert not missing, f"the cursor would pass {sorted(missing)[:3]}, which the consumer lacks"

    store.witness = witness
    if step == "before_call":
        sink.faults.crash_before.add(number)
    elif step == "after_call":
        sink.faults.crash_after.add(number)
    else:
        store.fail_advance(Crash("killed"), after_write=step == "after_cursor_write", to=f"c{number * 10}")
    crashed = False
    try:
        run(relay(sink, source, store, clock), clock)
    except Crash:
        crashed = True
    sink.faults.crash_before.clear()
    sink.faults.crash_after.clear()
    clock.advance(LEASE_SECONDS + 1)
    assert run(relay(sink, source, store, clock), clock) is Outcome.CAUGHT_UP

    assert set(sink.ids()) == set(source.ids), f"{sink.name}: events lost after a crash {step} {number}"
    assert offset_of(store.load(EXTERN.id).position) == 20
    return crashed


# An SQS-compatible queue is the SQS adapter with a client of its own: the other tests cover it.
@pytest.mark.parametrize("sink_name", [name for name in SINKS if name != "sqs-compatible"])
def test_a_crash_at_any_step_of_a_page_loses_nothing_and_the_cursor_never_passes_what_the_sink_lacks(
    sink_name: str, aws
) -> None:
    crashes = 0
    for step in STEPS:
        for number in range(1, 20):
            sink = harness(sink_name, aws)
            try:
                if not crash(sink, step, number):
                    break  # past the feed's last call or page: every later number is a clean run
                crashes += 1
            finally:
                sink.close()
                metrics.clear_metrics()
    # Two pages: at least one call each, two cursor writes, and a crash both sides of each.
    assert crashes >= 2 * 2 + 2 * 2


# -- order ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sink_name", ORDERED)
def test_an_ordered_sink_keeps_each_group_in_order_even_when_it_refuses_entries(sink_name: str, aws) -> None:
    sink = harness(sink_name, aws)
    try:
        # Every third entry refused on its first call: a retry must not let a later event of its
        # group ahead of it (a FIFO call holds one event a group; the webhook refuses whole requests).
        first_tries: set[str] = set()

        def refuse(call: int, event_id: str) -> Refusal | None:
            if int(event_id[-6:]) % 3 or event_id in first_tries:
                return None
            first_tries.add(event_id)
            return Refusal("InternalError")

        sink.faults.refuse = refuse
        if sink_name == "webhook":
            sink.refuse_requests(2)
        publisher = sink.publisher()
        boxes = [Feed(id=f"diadoc:box{n}", kind="diadoc", source_uri=f"https://diadoc.test/box{n}") for n in (1, 2)]
        pages = {box.id: events(40, groups=5, prefix=f"{box.id[-1]}-") for box in boxes}
        for start in range(0, 40, 10):
            for box in boxes:
                publisher.publish(box, pages[box.id][start : start + 10])

        received = sink.received()
        by_group: dict[tuple[str, str | None], list[str]] = defaultdict(list)
        for message in received:
            group = message.group if sink_name != "webhook" else None  # the webhook: the whole feed
            by_group[(message.event["feed"], group)].append(message.event["id"])
        for (feed, group), ids in by_group.items():
            expected = [e.id for e in pages[feed] if group is None or e.ordering_key == group]
            assert list(dict.fromkeys(ids)) == expected, f"{feed} {group}: out of order"
    finally:
        sink.close()


# -- size ----------------------------------------------------------------------------------------


def test_an_event_over_the_sink_s_own_limit_arrives_as_a_pointer_to_its_exact_bytes(sink: Harness) -> None:
    # "ж" is 2 bytes: one event a little under the sink's limit, one a little over it.
    under, over = events(1, pad=(sink.limit - 3_000) // 2)[0], events(2, pad=(sink.limit + 1_000) // 2)[1]
    neighbour = events(3)[2]

    sink.publisher().publish(EXTERN, [under, over, neighbour])

    received = {m.event["id"]: m for m in sink.received()}
    assert set(received) == {under.id, over.id, neighbour.id}
    assert received[under.id].pointer is None, "under the limit: inline"
    assert received[over.id].pointer is not None, "over the limit: a pointer"
    assert received[over.id].event["data"] == over.data, "the stored payload is the event, byte for byte"
    assert received[neighbour.id].pointer is None


# -- filter fields -------------------------------------------------------------------------------


def test_the_filter_fields_reach_the_consumer_and_filters_match_on_them(sink: Harness) -> None:
    policy = {"source": ["extern"], "docflow_type": ["urn:docflow:fns534-report"]}
    filtered = sink.filtered(policy)
    page = events(10)

    sink.publisher().publish(EXTERN, page)

    for message in sink.received():
        if sink.name == "webhook":
            assert message.attributes == {}, "the webhook's receiver filters on the CloudEvent itself"
            assert message.event["type"] == "ru.kontur.extern.docflow-event"
            continue
        assert message.attributes["source"] == "extern"
        assert message.attributes["feed"] == "extern"
        assert message.attributes["event_type"] == "ru.kontur.extern.docflow-event"
        assert message.attributes["docflow_type"] in ("urn:docflow:fns534-report", "urn:docflow:stat-report")
    if filtered is not None:
        wanted = [e.id for e in page if e.attributes["docflow_type"] == "urn:docflow:fns534-report"]
        assert sorted(m.event["id"] for m in filtered()) == wanted


# -- what the sink refuses -----------------------------------------------------------------------


def refuse_every_other(attempts: int) -> object:
    """Every other event refused on the first ``attempts`` calls it is in, then taken."""
    seen: dict[str, int] = defaultdict(int)

    def refuse(call: int, event_id: str) -> Refusal | None:
        if int(event_id[-6:]) % 2:
            return None
        seen[event_id] += 1
        return Refusal("InternalError") if seen[event_id] <= attempts else None

    return refuse


def test_entries_the_sink_refuses_are_sent_again_with_growing_pauses_until_taken(sink: Harness) -> None:
    if sink.name == "webhook":
        sink.refuse_requests(2)  # a receiver that is down, then back
    else:
        sink.faults.refuse = refuse_every_other(2)  # type: ignore[assignment]
    page = events(20)

    sink.publisher().publish(EXTERN, page)

    assert sorted(sink.ids()) == [e.id for e in page], "each once: a refused entry was not taken"
    assert len(sink.sleeps) >= 2
    assert all(pause >= 0 for pause in sink.sleeps)


def test_entries_refused_past_the_attempts_fail_the_page_and_the_cursor_waits_for_them(sink: Harness) -> None:
    clock, source = FakeClock(), FakeSource(20, page_size=10)
    store = FakeCursorStore(clock=clock)
    if sink.name == "webhook":
        sink.refuse_requests(5)
    else:
        sink.faults.refuse = lambda call, event_id: Refusal("InternalError") if event_id == "ev000003" else None

    with pytest.raises(PublishError, match=r"did not accept .* after 5 attempts"):
        run(relay(sink, source, store, clock), clock)
    assert store.load(EXTERN.id).position is None, "the cursor waits"

    sink.faults.refuse = None
    clock.advance(LEASE_SECONDS + 1)
    assert run(relay(sink, source, store, clock), clock) is Outcome.CAUGHT_UP
    assert set(sink.ids()) == set(source.ids)


def test_an_entry_refused_as_the_sender_s_fault_is_not_sent_again(sink: Harness) -> None:
    if sink.name == "webhook":
        sink.refuse_requests(1, final=True)  # 400
    else:
        code = "InvalidArgument" if sink.name == "eventbridge" else "InvalidParameterValue"
        sink.faults.refuse = lambda call, event_id: Refusal(code, final=True) if event_id == "ev000003" else None

    with pytest.raises(PublishError, match="rejected event"):
        sink.publisher().publish(EXTERN, events(10))

    assert sink.sleeps == [], "no retry"


def test_throttling_is_waited_out_or_fails_the_page(sink: Harness) -> None:
    page = events(5)
    if sink.name == "webhook":
        # A 429 asks for a second; the relay waits that long, then the receiver takes the events.
        sink.throttle_requests(1)
        sink.publisher().publish(EXTERN, page)
        assert sink.sleeps
        assert sink.sleeps[0] >= 1.0
        assert sorted(sink.ids()) == [e.id for e in page]
        return
    # boto3 retries throttling itself; what outlasts its retries fails the page.
    sink.faults.throttled.add(1)
    with pytest.raises(PublishError, match="ThrottlingException"):
        sink.publisher().publish(EXTERN, page)
    assert sink.ids() == []


def test_a_message_carries_the_trace_as_an_attribute_only_where_the_attribute_budget_allows() -> None:
    trace = begin_run_trace()
    eight = FeedEvent(id="e", type="t", data={}, attributes={f"a{n}": "v" for n in range(5)})
    nine = FeedEvent(id="e", type="t", data={}, attributes={f"a{n}": "v" for n in range(6)})

    assert sink_message.message(EXTERN, eight, trace.traceparent).attributes["traceparent"] == trace.traceparent
    assert "traceparent" not in sink_message.message(EXTERN, nine, trace.traceparent).attributes, (
        "nine of the event's own, and ExtendedPayloadSize's place kept"
    )
