"""EventBridge's ``cron(minutes hours day-of-month month day-of-week year)`` for the local scheduler.

The local clock is accelerated and starts each schedule at once, so a cron schedule runs locally at
its average pace: how often it fires over the coming weeks, as a period. ``cron(0/5 * * * ? *)`` is
every 5 minutes, ``cron(0 8-17 ? * MON-FRI *)`` 50 times a week.
"""

from __future__ import annotations

import calendar
import datetime as dt

_MONTHS = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
#: EventBridge numbers days of the week 1 (Sunday) to 7 (Saturday).
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
#: Fields in order: name, smallest value, largest, names.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 1, 7, _DAYS),
    ("year", 1970, 2199, {}),
)


def _values(text: str, low: int, high: int, names: dict[str, int], field: str) -> set[int]:
    result: set[int] = set()
    for part in text.upper().split(","):
        base, _, step = part.partition("/")
        try:
            if base in ("*", "?"):
                start, end = low, high
            elif "-" in base:
                first, last = base.split("-", 1)
                start, end = names.get(first) or int(first), names.get(last) or int(last)
            else:
                start = names.get(base) or int(base)
                end = high if step else start
        except ValueError:
            raise ValueError(f"cron {field} {part!r}: only numbers, names, * ? - / run locally") from None
        if not low <= start <= high or not low <= end <= high:
            raise ValueError(f"cron {field} {part!r} is outside {low}-{high}")
        result.update(range(start, end + 1, int(step) if step else 1))
    return result


def fires(expression: str, start: dt.datetime, days: int) -> int:
    """How many times ``cron(...)`` fires in ``days`` days from ``start`` (UTC)."""
    fields = expression.strip().removeprefix("cron(").removesuffix(")").split()
    if len(fields) != len(_FIELDS):
        raise ValueError(f"{expression!r}: a cron expression has six fields (minutes to year)")
    minutes, hours, dom, months, dow, years = (
        _values(text, low, high, names, name) for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True)
    )
    count = 0
    for offset in range(days):
        day = (start + dt.timedelta(days=offset)).date()
        weekday = day.isoweekday() % 7 + 1  # Monday 1 -> 2, Sunday 7 -> 1
        # As in cron, one of the two day fields is "?" (or "*"): the other decides.
        day_matches = (fields[2] in ("?", "*") or day.day in dom) and (fields[4] in ("?", "*") or weekday in dow)
        if day_matches and day.month in months and day.year in years:
            count += len(hours) * len(minutes)
    return count


def average_period(expression: str, *, now: dt.datetime | None = None) -> float:
    """Seconds between two firings, on average over the coming weeks (a year, for rare schedules)."""
    start = now or dt.datetime.now(dt.UTC)
    for days in (28, 366):
        count = fires(expression, start, days)
        if count:
            return days * 86400 / count
    raise ValueError(f"{expression!r} does not fire within a year")
