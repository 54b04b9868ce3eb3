"""Dates written in a question become day ranges; words that only look like dates do not."""

from __future__ import annotations

from datetime import date

import pytest

from memoryd.querydates import DayRange, day_ranges

TODAY = date(2026, 11, 29)


def _one(first: str, last: str | None = None) -> list[DayRange]:
    return [DayRange(date.fromisoformat(first), date.fromisoformat(last or first))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What did Kevin watch on the night of 10.01.2024?", _one("2024-01-10")),
        ("the meeting of 01/17/2024", _one("2024-01-17")),
        ("notes from 2024-01-17", _one("2024-01-17")),
        ("How many times did he call on 3 Jan 2024?", _one("2024-01-03")),
        ("When was it, January 14th, 2024?", _one("2024-01-14")),
        ("le 3 janvier 2024", _one("2024-01-03")),
        ("our trip in May 2023", _one("2023-05-01", "2023-05-31")),
        ("en mai 2023", _one("2023-05-01", "2023-05-31")),
        ("what did we try in 2023", _one("2023-01-01", "2023-12-31")),
        ("what did we say last May", _one("2026-05-01", "2026-05-31")),
        ("on December 25", _one("2025-12-25")),
        ("yesterday's bug", _one("2026-11-28")),
        ("hier soir", _one("2026-11-28")),
        ("last week", _one("2026-11-16", "2026-11-22")),
        ("last month", _one("2026-10-01", "2026-10-31")),
    ],
)
def test_dates_in_a_question(text: str, expected: list[DayRange]) -> None:
    """Each written form maps to the days it means, relative to today where it is relative."""
    assert day_ranges(text, TODAY) == expected


@pytest.mark.parametrize(
    "text", ["May I ask you something?", "port 2020 on 10.0.0.1", "2048 tokens", "version 3.11", "31.02.2024"]
)
def test_no_date_where_none_is_meant(text: str) -> None:
    """A modal verb, a port, a count, an address, a version or an impossible day gives no range."""
    assert day_ranges(text, TODAY) == []


def test_several_dates_each_once_in_order() -> None:
    """Two days are two ranges, sorted; the same day written twice is one."""
    ranges = day_ranges("between 5 Jan 2024 and 2024-01-02, and again 02.01.2024", TODAY)
    assert ranges == [*_one("2024-01-02"), *_one("2024-01-05")]


def test_widened_adds_a_day_each_side() -> None:
    """A remembered day is often one off: the range used for search takes a day either side."""
    assert _one("2024-01-10")[0].widened() == DayRange(date(2024, 1, 9), date(2024, 1, 11))
