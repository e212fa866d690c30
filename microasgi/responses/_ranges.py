"""Byte ranges, entity tags and preconditions (RFC 9110 sections 8.8, 13 and 14).

Pure functions over header values, shared by FileResponse and StaticFiles.
Each one reads its input once, left to right, and stops early where a limit is
reached, so hostile headers (thousands of tags or ranges, huge numbers) cost
time linear in their length at most.
"""

from __future__ import annotations

import calendar
import datetime
import re
import time
from collections.abc import Iterator

__all__ = [
    "NOT_MODIFIED",
    "PRECONDITION_FAILED",
    "etag_for",
    "evaluate_preconditions",
    "if_range_allows",
    "matches_any",
    "parse_http_date",
    "parse_range",
]

#: Numbers with more significant digits than this are larger than any file: they
#: are read as `_BEYOND` instead of being converted (int() of a long string is slow).
_MAX_DIGITS = 18
_BEYOND: int = 10**_MAX_DIGITS
#: No real HTTP-date is longer than this; longer values are not parsed.
_MAX_DATE_LENGTH = 64
_DIGITS = frozenset("0123456789")
_OWS = " \t"

NOT_MODIFIED = 304
PRECONDITION_FAILED = 412


# -- byte ranges (RFC 9110 section 14) ---------------------------------------------------


def _number(text: str) -> int | None:
    """A run of ASCII digits as an int (None if it is not one); `_BEYOND` if very large.

    Leading zeros are allowed (1*DIGIT) and do not count towards the size.
    """
    if not text or not _DIGITS.issuperset(text):
        return None
    significant = text.lstrip("0")
    if len(significant) > _MAX_DIGITS:
        return _BEYOND
    return int(significant) if significant else 0


def parse_range(header: str, size: int, max_ranges: int) -> list[tuple[int, int]] | None:
    """The byte ranges a Range header asks of a representation of `size` bytes.

    Returns None when the header is to be ignored (the whole representation is
    sent with 200): another unit than ``bytes``, a syntax error anywhere, a
    range whose last position comes before its first, or more than
    `max_ranges` ranges. Returns an empty list when the syntax is valid but no
    range is satisfiable (416). Otherwise the satisfiable ranges as
    ``(start, end)`` pairs, `end` exclusive, with overlapping and adjacent ones
    merged, in the order of the request (a merged range where its first part
    was).
    """
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip(_OWS).lower() != "bytes":
        return None
    ranges: list[tuple[int, int]] = []
    count = 0
    for element in range_set.split(","):
        spec = element.strip(_OWS)
        if not spec:
            continue  # empty list elements are allowed (RFC 9110 section 5.6.1)
        count += 1
        if count > max_ranges:
            return None
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if first_text:
            first = _number(first_text)
            last = _number(last_text) if last_text else None
            if first is None or (last_text and last is None):
                return None
            if last is not None and last < first:
                return None  # an invalid int-range makes the whole range set invalid
            if first < size:
                end = size if last is None else min(last + 1, size)
                ranges.append((first, end))
        else:
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                ranges.append((max(size - suffix, 0), size))
    if count == 0:
        return None
    return _coalesce(ranges)


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping and adjacent ranges: sorts and one pass (n log n).

    The parts keep the order of the request (RFC 9110 section 14.6); a merged
    part takes the place of the first of the ranges it was made of.
    """
    if len(ranges) < 2:
        return ranges
    order = sorted(range(len(ranges)), key=ranges.__getitem__)
    merged: list[list[int]] = []  # [start, end, index of its first range in the request]
    for index in order:
        start, end = ranges[index]
        if merged and start <= merged[-1][1]:
            last = merged[-1]
            last[1] = max(last[1], end)
            last[2] = min(last[2], index)
        else:
            merged.append([start, end, index])
    if len(merged) == len(ranges):
        return ranges  # nothing merged
    merged.sort(key=lambda part: part[2])
    return [(start, end) for start, end, _ in merged]


# -- entity tags and dates ---------------------------------------------------------------


def etag_for(mtime_ns: int, size: int, suffix: str = "") -> str:
    """A strong entity tag from a file's modification time (ns) and size."""
    return f'"{mtime_ns:x}-{size:x}{suffix}"'


def _entity_tags(value: str) -> Iterator[tuple[bool, str]]:
    """(weak, opaque-tag) for each entity tag of a list; stops at the first malformed one.

    The opaque tag keeps its quotes. Commas may appear inside a tag, so the
    list is scanned, not split.
    """
    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if char in " \t,":
            i += 1
            continue
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i >= n or value[i] != '"':
            return
        close = value.find('"', i + 1)
        if close < 0:
            return
        yield weak, value[i : close + 1]
        i = close + 1


def matches_any(header: str, etag: str, *, weak: bool) -> bool:
    """Whether the entity-tag list `header` (or ``*``) matches `etag`.

    Weak comparison (If-None-Match) compares the opaque tags only; strong
    comparison (If-Match, If-Range) also needs both tags to be strong.
    """
    if header.strip(_OWS) == "*":
        return True
    etag_weak = etag.startswith("W/")
    opaque = etag[2:] if etag_weak else etag
    if not weak and etag_weak:
        return False
    return any(tag == opaque and (weak or not tag_weak) for tag_weak, tag in _entity_tags(header))


_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
#: The three forms of RFC 9110 section 5.6.7, exactly (names are case-sensitive).
_IMF_FIXDATE = re.compile(f"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(
    "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    f"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE = re.compile(f"{_DAY} {_MONTH} ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")


def _timestamp(year: int, month: str, day: str, hour: str, minute: str, second: str) -> int | None:
    """Unix seconds for the parts of a date, or None if no such day or time exists."""
    month_number = _MONTHS.index(month) + 1
    try:
        # datetime checks the day against the month (no 30 February) and the year (1-9999).
        datetime.date(year, month_number, int(day))
    except ValueError:
        return None
    clock = int(hour), int(minute), int(second)
    if clock[0] > 23 or clock[1] > 59 or clock[2] > 60:  # 60: a leap second
        return None
    return calendar.timegm((year, month_number, int(day), *clock))


def parse_http_date(value: str) -> int | None:
    """An HTTP-date (one of the three forms of RFC 9110 section 5.6.7) as Unix seconds.

    None for anything else: another zone than GMT, a list of dates, text around
    the date, a day or time that does not exist. The conditional headers must
    ignore such values (RFC 9110 sections 13.1.3 and 13.1.4), not guess.
    """
    if len(value) > _MAX_DATE_LENGTH:
        return None
    value = value.strip(_OWS)
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), month, day, hour, minute, second)
    if match := _RFC850_DATE.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # A two-digit year more than 50 years ahead is the last such year in the past.
        this_year = time.gmtime().tm_year
        year = this_year - this_year % 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, month, day, hour, minute, second)
    if match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
        return _timestamp(int(year), month, day.strip(), hour, minute, second)
    return None


# -- preconditions (RFC 9110 section 13.2.2) ---------------------------------------------


def evaluate_preconditions(
    *,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    etag: str | None,
    last_modified: int | None,
    now: float,
) -> int | None:
    """What the preconditions of a GET or HEAD ask for: 304, 412, or None (go on).

    `last_modified` is the representation's modification time in whole
    seconds (as sent in Last-Modified). Steps in the order of RFC 9110
    section 13.2.2; a date that does not parse, or lies in the future, is
    ignored; If-Modified-Since is ignored when If-None-Match is present.
    """
    if if_match is not None:
        if etag is None or not matches_any(if_match, etag, weak=False):
            return PRECONDITION_FAILED
    elif if_unmodified_since is not None and last_modified is not None:
        date = parse_http_date(if_unmodified_since)
        if date is not None and last_modified > date:
            return PRECONDITION_FAILED
    if if_none_match is not None:
        if etag is not None and matches_any(if_none_match, etag, weak=True):
            return NOT_MODIFIED
    elif if_modified_since is not None and last_modified is not None:
        date = parse_http_date(if_modified_since)
        if date is not None and date <= now and last_modified <= date:
            return NOT_MODIFIED
    return None


def if_range_allows(value: str, etag: str | None, last_modified: int | None, now: float) -> bool:
    """Whether an If-Range header lets the Range header apply (RFC 9110 section 13.1.5).

    An entity tag must match strongly. A date must equal Last-Modified, and a
    modification time counts as a strong validator only once it is at least a
    second old (the file could have changed twice within that second).
    """
    value = value.strip(_OWS)
    if value.startswith("W/"):
        return False  # a weak tag never matches strongly
    if value.startswith('"'):
        # Exactly one strong tag: the value is that tag, quotes included.
        return etag is not None and value == etag and value.count('"') == 2
    date = parse_http_date(value)
    return (
        date is not None
        and last_modified is not None
        and date == last_modified
        and now - last_modified >= 1
    )
