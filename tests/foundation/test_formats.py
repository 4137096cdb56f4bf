"""The app's date format (ISO, 24-hour) applies to Django's own rendering, the admin included."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import formats


def test_date_format__en_us__iso_dates_and_24_hour_times():
    moment = datetime(2026, 11, 23, 17, 5, tzinfo=UTC)
    assert formats.date_format(moment) == "2026-11-23"
    assert formats.date_format(moment, "DATETIME_FORMAT") == "2026-11-23 17:05"
