"""Working-time arithmetic (pure) and the review SLA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from experiments.worktime import working_days_between, working_time_between


def _at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)  # 2025-03-03 is a Monday


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (_at(3, 9), _at(3, 17), timedelta(hours=8)),  # same weekday
        (_at(7, 10), _at(10, 10), timedelta(hours=14 + 10)),  # Fri -> Mon: weekend skipped
        (_at(8, 9), _at(9, 20), timedelta(0)),  # Sat -> Sun: nothing
        (_at(8, 9), _at(10, 6), timedelta(hours=6)),  # Sat -> Mon 06:00
        (_at(3), _at(10), timedelta(days=5)),  # a whole week is five working days
        (_at(5, 12), _at(5, 11), timedelta(0)),  # end before start
    ],
)
def test_working_time_between__spans__weekends_not_counted(start, end, expected):
    assert working_time_between(start, end) == expected


def test_working_days_between__fri_to_tue__just_under_two():
    # Given a submission Friday 10:00, When it is Tuesday 09:00, Then 47 weekday hours have passed
    assert working_days_between(_at(7, 10), _at(11, 9)) == pytest.approx(47 / 24)


def test_working_time_between__other_zone__weekend_is_local():
    # Given a zone ahead of UTC: Friday 23:00 UTC is already Saturday 08:00 in Tokyo
    tokyo = ZoneInfo("Asia/Tokyo")
    start = _at(7, 23).astimezone(tokyo)
    # When measured to Saturday 23:00 UTC (Sunday in Tokyo), Then no working time passed
    assert working_time_between(start, _at(8, 23)) == timedelta(0)


def test_working_time_between__naive__refused():
    with pytest.raises(ValueError):
        working_time_between(datetime(2025, 3, 3), _at(4))  # noqa: DTZ001
