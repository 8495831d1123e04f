"""The template's alarms played over a timeline of the metrics the pollers emit, minute by minute, to
see who gets notified and when: what an operator lives through after a deployment.

A model of CloudWatch's evaluation, kept to what these alarms use: periods aligned to their length;
Sum, Maximum or Minimum of a period's datapoints; the last EvaluationPeriods periods, of which
DatapointsToAlarm breaching put the alarm in ALARM, a period without data counting as its
TreatMissingData says; a composite alarm's rule over the others' states; actions on a change of
state. CloudWatch's wider look-back for missing data, which only delays some changes, is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from local_stack.template import Stack

#: One tick's metrics by kind (``{"extern": {"RunSucceeded": 1, ...}}``); None: no poller ran.
Tick = Mapping[str, Mapping[str, float]]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}
STATISTICS: dict[str, Callable[[list[float]], float]] = {"Sum": sum, "Maximum": max, "Minimum": min}


@dataclass(frozen=True)
class Notification:
    minute: int
    alarm: str
    state: str


@dataclass
class Timeline:
    """The alarms of ``stack`` (evaluated for its parameters), and what they did so far."""

    stack: Stack
    emitted: list[Tick | None] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    notifications: list[Notification] = field(default_factory=list)

    def run(self, minutes: int, tick: Callable[[int], Tick | None]) -> Timeline:
        for _ in range(minutes):
            self.emitted.append(tick(len(self.emitted)))
            self._evaluate(len(self.emitted))
        return self

    def sent(self, state: str = "ALARM") -> list[Notification]:
        return [notification for notification in self.notifications if notification.state == state]

    def _evaluate(self, now: int) -> None:
        metric = {lid: self.stack.resolve(a["Properties"]) for lid, a in self.stack.resources("AWS::CloudWatch::Alarm")}
        for logical_id, props in metric.items():
            self._set(now, logical_id, props, self._metric_state(now, props))
        names = {self.stack.physical[logical_id]: logical_id for logical_id in metric}
        for logical_id, alarm in self.stack.resources("AWS::CloudWatch::CompositeAlarm"):
            props = self.stack.resolve(alarm["Properties"])
            holds = _rule(props["AlarmRule"], lambda state, name: self.states.get(names[name]) == state)
            self._set(now, logical_id, props, "ALARM" if holds else "OK")

    def _set(self, now: int, logical_id: str, props: dict[str, Any], state: str | None) -> None:
        if state is None or state == self.states.get(logical_id):
            return
        self.states[logical_id] = state
        if props.get({"ALARM": "AlarmActions", "OK": "OKActions"}[state]):
            self.notifications.append(Notification(now, logical_id, state))

    def _metric_state(self, now: int, props: dict[str, Any]) -> str | None:
        if props.get("Namespace") != "KonturFeedRelay":
            return "OK"  # AWS's own metrics (the queue, the API): quiet in these timelines
        kind = {d["Name"]: d["Value"] for d in props["Dimensions"]}["kind"]
        minutes = int(props["Period"]) // 60
        last_whole = now - now % minutes
        breaching, judged = 0, 0
        for period in range(int(props["EvaluationPeriods"])):
            end = last_whole - period * minutes
            if end - minutes < 0:
                break
            ticks = [t for t in self.emitted[end - minutes : end] if t is not None]
            values = [t[kind][props["MetricName"]] for t in ticks if props["MetricName"] in t.get(kind, {})]
            if values:
                judged += 1
                value = STATISTICS[props["Statistic"]](values)
                breaching += COMPARE[props["ComparisonOperator"]](value, float(props["Threshold"]))
            elif props["TreatMissingData"] in ("breaching", "notBreaching"):
                judged += 1
                breaching += props["TreatMissingData"] == "breaching"
        if judged < int(props["EvaluationPeriods"]) and breaching < int(props["DatapointsToAlarm"]):
            return None  # too few periods yet to say OK: INSUFFICIENT_DATA, no action
        return "ALARM" if breaching >= int(props["DatapointsToAlarm"]) else "OK"


def _rule(text: str, state_of: Callable[[str, str], bool]) -> bool:
    """A composite alarm's rule: ALARM("name") and OK("name") joined by AND, OR, NOT and parentheses."""
    tokens = re.findall(r'(ALARM|OK)\("([^"]+)"\)|(AND|OR|NOT|\(|\))', text)
    position = 0

    def term() -> bool:
        nonlocal position
        state, name, word = tokens[position]
        position += 1
        if word == "NOT":
            return not term()
        if word == "(":
            value = either()
            position += 1  # ")"
            return value
        return state_of(state, name)

    def both() -> bool:
        nonlocal position
        value = term()
        while position < len(tokens) and tokens[position][2] == "AND":
            position += 1
            value = term() and value
        return value

    def either() -> bool:
        nonlocal position
        value = both()
        while position < len(tokens) and tokens[position][2] == "OR":
            position += 1
            value = both() or value
        return value

    return either()
