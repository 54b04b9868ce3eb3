"""Dates a person writes in a question ("on 3 Jan 2024", "last May", "in 2023"), as day ranges.

Search uses them as a soft preference, never as a filter: the texts of those
days are searched again and fused with the unfiltered lists (see
``memoryd.search``), because a remembered date is often a day or two off, and
a question may mention a date that is not when the answer was said.

English and French, the forms people type: ISO ``2024-01-17``, day first
``17.01.2024`` / ``17/01/2024`` (month first when the day cannot be a month:
``01/17/2024``), ``3 Jan 2024``, ``January 14, 2024``, ``3 janvier 2024``,
a month and year (``May 2023``, ``mai 2023``), a year after a preposition
(``in 2023``, ``en 2023``; a bare ``2048`` is as often a port or a count),
and relative ones: ``today``, ``yesterday``, ``last week``, ``last month``,
``last year``, ``last May``, ``this year`` (and their French).
A day and month without a year ("on January 14") are taken in the year of
``today`` or, when that day is still to come, the year before.  Anything else
is left alone: no date is better than a wrong one.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta

# A remembered day is often one off (a chat past midnight, "the other day").
DAY_MARGIN = 1

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        ("january", "jan", "janvier", "janv"),
        ("february", "feb", "février", "fevrier", "févr", "fevr"),
        ("march", "mar", "mars"),
        ("april", "apr", "avril", "avr"),
        ("may", "mai"),
        ("june", "jun", "juin"),
        ("july", "jul", "juillet", "juil"),
        ("august", "aug", "août", "aout"),
        ("september", "sep", "sept", "septembre"),
        ("october", "oct", "octobre"),
        ("november", "nov", "novembre"),
        ("december", "dec", "décembre", "decembre", "déc"),
    ),
    start=1,
):
    for _name in _names:
        _MONTHS[_name] = _number

_MONTH = "(?P<month>" + "|".join(sorted(map(re.escape, _MONTHS), key=len, reverse=True)) + r")\.?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th|er)?"

_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?P<year>(?:19|20)\d\d)-(?P<nmonth>[01]?\d)-(?P<day>[0-3]?\d)\b",
        r"\b(?P<a>[0-3]?\d)[./](?P<b>[0-3]?\d)[./](?P<year>(?:19|20)\d\d)\b",
        rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b",
        rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b",
        rf"\b{_MONTH}\s+{_YEAR}\b",
        rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?!\s*,?\s*(?:19|20)\d\d)\b",
        rf"\b{_MONTH}\s+{_DAY}(?!\d)(?!\s*,?\s*(?:19|20)\d\d)\b",
        # A bare number is a port or a count as often as a year: only after a preposition.
        rf"\b(?:in|en|of|de|during|pendant|since|depuis|year|année|annee)\s+{_YEAR}\b",
    )
)
_LAST_MONTH_NAME = (
    re.compile(rf"\blast\s+{_MONTH}(?!\s*[0-3]?\d)", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}\s+dernier\b", re.IGNORECASE),
)
_RELATIVE = re.compile(
    r"\b(?P<word>today|aujourd'hui|yesterday|hier|last week|la semaine dernière|la semaine derniere"
    r"|last month|le mois dernier|last year|l'année dernière|l'annee derniere|this year|cette année|cette annee)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True, order=True)
class DayRange:
    """Days from ``first`` to ``last``, both included."""

    first: date
    last: date

    def widened(self, days: int = DAY_MARGIN) -> DayRange:
        return DayRange(self.first - timedelta(days=days), self.last + timedelta(days=days))


def _month_range(year: int, month: int) -> DayRange:
    return DayRange(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))


def _day(year: int, month: int, day: int) -> DayRange | None:
    try:
        one = date(year, month, day)
    except ValueError:
        return None
    return DayRange(one, one)


def _yearless(today: date, month: int, day: int) -> DayRange | None:
    found = _day(today.year, month, day)
    if found is not None and found.first > today:
        found = _day(today.year - 1, month, day)
    return found


def _from_match(groups: dict[str, str | None], today: date) -> DayRange | None:
    year = int(groups.get("year") or 0) or None
    month = _MONTHS.get((groups.get("month") or "").lower().rstrip("."))
    day = int(groups.get("day") or 0) or None
    if groups.get("nmonth"):
        month = int(groups["nmonth"] or 0)
    if groups.get("a") and groups.get("b"):
        a, b = int(groups["a"] or 0), int(groups["b"] or 0)
        day, month = (b, a) if b > 12 >= a else (a, b)  # day first unless the day cannot be a month
    if year is not None and month and day:
        return _day(year, month, day)
    if year is not None and month:
        return _month_range(year, month) if 1 <= month <= 12 else None
    if month and day:
        return _yearless(today, month, day)
    if year is not None:
        return DayRange(date(year, 1, 1), date(year, 12, 31))
    return None


def _relative(word: str, today: date) -> DayRange:
    word = word.lower().replace("é", "e")
    if word in ("today", "aujourd'hui"):
        return DayRange(today, today)
    if word in ("yesterday", "hier"):
        return DayRange(today - timedelta(days=1), today - timedelta(days=1))
    if "week" in word or "semaine" in word:
        monday = today - timedelta(days=today.weekday() + 7)
        return DayRange(monday, monday + timedelta(days=6))
    if "month" in word or "mois" in word:
        last = today.replace(day=1) - timedelta(days=1)
        return _month_range(last.year, last.month)
    if word in ("this year", "cette annee"):
        return DayRange(date(today.year, 1, 1), today)
    return DayRange(date(today.year - 1, 1, 1), date(today.year - 1, 12, 31))


def day_ranges(text: str, today: date | None = None) -> list[DayRange]:
    """The days ``text`` refers to, each range once, in order; empty when it names none."""
    today = today or date.today()
    found: list[DayRange] = []
    taken: list[tuple[int, int]] = []

    def add(span: tuple[int, int], rng: DayRange | None) -> None:
        if any(s < span[1] and span[0] < e for s, e in taken):
            return
        taken.append(span)  # an impossible day (31.02.2024) is still not a year
        if rng is not None and rng not in found:
            found.append(rng)

    for match in _RELATIVE.finditer(text):
        add(match.span(), _relative(match.group("word"), today))
    for last in _LAST_MONTH_NAME:
        for match in last.finditer(text):
            month = _MONTHS[match.group("month").lower().rstrip(".")]
            year = today.year if month < today.month else today.year - 1
            add(match.span(), _month_range(year, month))
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            add(match.span(), _from_match(match.groupdict(), today))
    return sorted(found)
