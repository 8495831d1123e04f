"""Diadoc's timestamps: .NET ticks, 100-nanosecond intervals since 0001-01-01T00:00:00 UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

TICKS_PER_SECOND = 10_000_000
#: Ticks of 9999-12-31T23:59:59.9999999Z, .NET's DateTime.MaxValue.
MAX_TICKS = 3_155_378_975_999_999_999
_YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)


def to_rfc3339(ticks: int) -> str | None:
    """``2024-05-06T07:08:09.1234567Z``: every digit the ticks hold, trailing zeros dropped.

    None for ticks that name no instant (0, negative, past year 9999): a missing time beats a wrong one.
    """
    if not 0 < ticks <= MAX_TICKS:
        return None
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    moment = _YEAR_ONE + timedelta(seconds=seconds)
    # Not strftime: it drops the leading zeros of years before 1000 on glibc.
    whole = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    digits = f"{fraction:07d}".rstrip("0")
    return f"{whole}.{digits}Z" if digits else f"{whole}Z"


def from_rfc3339(text: str) -> int:
    """Ticks of an RFC 3339 timestamp; a zone is required, since Diadoc's ticks are UTC."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return to_ticks(moment)


def to_ticks(moment: datetime) -> int:
    """Ticks of an aware datetime."""
    delta = moment.astimezone(UTC) - _YEAR_ONE
    return (delta.days * 86_400 + delta.seconds) * TICKS_PER_SECOND + delta.microseconds * 10
