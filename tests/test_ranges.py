"""Byte ranges, entity tags, dates and preconditions (microasgi/responses/_ranges.py).

Hand-picked cases from RFC 9110, properties checked by hypothesis against a byte-by-byte
model, and the cost of hostile headers counted in comparisons, not timed.
"""

from __future__ import annotations

import calendar
import time
from email.utils import formatdate
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microasgi.responses import _ranges
from microasgi.responses._ranges import (
    NOT_MODIFIED,
    PRECONDITION_FAILED,
    etag_for,
    evaluate_preconditions,
    if_range_allows,
    matches_any,
    parse_http_date,
    parse_range,
)
from tests.linearity import assert_linear

SIZE = 100

# -- parse_range: hand-picked -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", [(0, 10)]),
        ("bytes=10-", [(10, 100)]),
        ("bytes=-10", [(90, 100)]),
        ("bytes=-1000", [(0, 100)]),  # a suffix longer than the file: the whole file
        ("bytes=90-1000", [(90, 100)]),  # last position past the end: clipped
        ("bytes=0-0", [(0, 1)]),
        ("bytes=99-99", [(99, 100)]),
        ("BYTES=0-1", [(0, 2)]),  # the unit is case-insensitive
        (" bytes = 0-1 ", [(0, 2)]),  # whitespace around the unit and the specs is tolerated
        ("bytes=0-1, 5-6", [(0, 2), (5, 7)]),
        ("bytes=5-6,0-1", [(5, 7), (0, 2)]),  # the request's order, nothing merged
        ("bytes=0-4,5-9", [(0, 10)]),  # adjacent: merged
        ("bytes=0-10,5-20", [(0, 21)]),  # overlapping: merged
        # Merged parts keep the request's order: each where its first range was.
        ("bytes=50-60,0-10,5-20", [(50, 61), (0, 21)]),
        ("bytes=0-1,50-60,5-6,0-3", [(0, 4), (50, 61), (5, 7)]),
        ("bytes=90-99,10-19,0-9,50-59", [(90, 100), (0, 20), (50, 60)]),
        ("bytes=0-,0-,0-", [(0, 100)]),
        ("bytes=0-1,,, 3-4", [(0, 2), (3, 5)]),  # empty list elements are allowed
        ("bytes=100-", []),  # starts at the end: unsatisfiable
        ("bytes=-0", []),  # a zero-length suffix: unsatisfiable
        ("bytes=100-200,300-", []),
        ("bytes=100-200,0-1", [(0, 2)]),  # unsatisfiable ranges are dropped
        ("bytes=5-1", None),  # last before first: invalid, the header is ignored
        ("bytes=0-1,5-1", None),
        ("bytes=", None),
        ("bytes=,", None),
        ("bytes", None),
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("bytes=1-2-3", None),
        ("bytes=+1-2", None),
        ("bytes=1--2", None),
        ("bytes=0x10-20", None),
        ("bytes=\u0661-\u0662", None),  # Arabic-Indic digits are not DIGIT
        ("bytes=1 - 2", None),
        ("items=0-1", None),  # another unit: ignored
        ("none", None),
        ("", None),
        ("bytes=99999999999999999999999999999-", []),  # huge: beyond the end
        ("bytes=0-99999999999999999999999999999", [(0, 100)]),
        ("bytes=-99999999999999999999999999999", [(0, 100)]),
        ("bytes=" + "9" * 5000 + "-", []),  # never converted to an int
        # Leading zeros are DIGITs like any other: the value counts, not the length.
        ("bytes=" + "0" * 30 + "5-" + "0" * 30 + "9", [(5, 10)]),
        ("bytes=-" + "0" * 30 + "5", [(95, 100)]),
        ("bytes=" + "0" * 5000 + "1-2", [(1, 3)]),
        ("bytes=" + "0" * 30 + "-", [(0, 100)]),
    ],
)
def test_parse_range(header: str, expected: list[tuple[int, int]] | None) -> None:
    assert parse_range(header, SIZE, 100) == expected


def test_parse_range_on_an_empty_file_is_unsatisfiable() -> None:
    assert parse_range("bytes=0-", 0, 100) == []
    assert parse_range("bytes=-5", 0, 100) == []


def test_more_ranges_than_the_limit_means_the_whole_file() -> None:
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 200, 2))  # 100 ranges
    assert parse_range(header, 1000, 100) is not None
    assert parse_range(header + ",500-501", 1000, 100) is None
    five_thousand = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 10000, 2))
    assert parse_range(five_thousand, 100_000, 100) is None


class CountingTuple(tuple):  # type: ignore[type-arg]
    """A (start, end) pair that counts the comparisons sorting makes."""

    comparisons = 0

    def __lt__(self, other: Any) -> bool:
        CountingTuple.comparisons += 1
        return tuple.__lt__(self, other)


def _comparisons_to_coalesce(n: int) -> int:
    # Overlapping ranges in reverse order: the order that made the old quadratic merges slow.
    ranges = [CountingTuple((i, i + 3)) for i in range(n, 0, -1)]
    CountingTuple.comparisons = 0
    _ranges._coalesce(ranges)
    return CountingTuple.comparisons


def test_coalescing_is_linear_log() -> None:
    small, large = _comparisons_to_coalesce(1000), _comparisons_to_coalesce(8000)
    # n log n grows about 10x from n to 8n (quadratic would be 64x).
    assert large <= 12 * small, (small, large)


def test_parse_range_work_grows_linearly_with_the_header() -> None:
    calls = {"n": 0}
    original = _ranges._number

    def counting(text: str) -> int | None:
        calls["n"] += 1
        return original(text)

    _ranges._number = counting
    try:
        for count in (500, 4000):
            header = "bytes=" + ",".join(f"{i}-{i + 5}" for i in range(count))
            calls["n"] = 0
            assert parse_range(header, 10**9, 10**6) is not None
            assert calls["n"] == 2 * count
    finally:
        _ranges._number = original


# -- parse_range: properties against a byte-by-byte model ---------------------------------

spec = st.one_of(
    st.tuples(st.integers(0, 150), st.none()),  # first-
    st.tuples(st.integers(0, 150), st.integers(0, 150)).map(lambda t: (min(t), max(t))),
    st.tuples(st.none(), st.integers(0, 150)),  # -suffix
)


def _render(item: tuple[int | None, int | None]) -> str:
    first, last = item
    return f"{'' if first is None else first}-{'' if last is None else last}"


def _model(specs: list[tuple[int | None, int | None]], size: int) -> set[int]:
    """The bytes a range set selects, computed the slow and obvious way."""
    selected: set[int] = set()
    for first, last in specs:
        if first is None:
            assert last is not None
            selected.update(range(max(size - last, 0), size) if last > 0 else ())
        else:
            end = size - 1 if last is None else min(last, size - 1)
            selected.update(range(first, end + 1))
    return selected


@settings(max_examples=400, deadline=None)
@given(specs=st.lists(spec, min_size=1, max_size=12), size=st.integers(0, 120))
def test_parse_range_selects_exactly_the_requested_bytes(
    specs: list[tuple[int | None, int | None]], size: int
) -> None:
    header = "bytes=" + ", ".join(_render(s) for s in specs)
    result = parse_range(header, size, 100)
    expected = _model(specs, size)
    assert result is not None
    if not expected:
        assert result == []
        return
    covered: set[int] = set()
    for start, end in result:
        assert 0 <= start < end <= size
        part = set(range(start, end))
        assert not (part & covered), "parts overlap"
        covered |= part
    assert covered == expected
    # No two parts touch (they would have been merged).
    bounds = sorted(result)
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(bounds))
    # The parts come in the order of the request: by the first range each was made of.
    firsts = [
        min(i for i, spec in enumerate(specs) if _model([spec], size) & set(range(start, end)))
        for start, end in result
    ]
    assert firsts == sorted(firsts)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="bytes=0123456789-, \t;xX+", max_size=60), st.integers(0, 50))
def test_parse_range_never_fails_on_junk(header: str, size: int) -> None:
    result = parse_range(header, size, 100)
    assert result is None or all(0 <= s < e <= size for s, e in result)


# -- entity tags ---------------------------------------------------------------------------


def test_etag_for_is_strong_and_quoted() -> None:
    tag = etag_for(1_700_000_000_123_456_789, 1234)
    assert tag.startswith('"') and tag.endswith('"') and not tag.startswith("W/")
    assert etag_for(1, 2, "-br") != etag_for(1, 2)


@pytest.mark.parametrize(
    ("header", "weak_result", "strong_result"),
    [
        ('"abc"', True, True),
        ('W/"abc"', True, False),
        ('"x", "abc"', True, True),
        ('"x",W/"abc"', True, False),
        ('"x" , "y"', False, False),
        ("*", True, True),
        (" * ", True, True),
        ('"ab"', False, False),
        ("abc", False, False),  # not a quoted tag: malformed
        ('"x", abc, "abc"', False, False),  # scanning stops at the malformed element
        ('"a,b", "abc"', True, True),  # a comma inside a tag is part of it
        ('"abc', False, False),
        ("", False, False),
    ],
)
def test_matches_any(header: str, weak_result: bool, strong_result: bool) -> None:
    assert matches_any(header, '"abc"', weak=True) is weak_result
    assert matches_any(header, '"abc"', weak=False) is strong_result


def test_weak_etag_of_ours_never_matches_strongly() -> None:
    assert matches_any('"abc"', 'W/"abc"', weak=True)
    assert not matches_any('"abc"', 'W/"abc"', weak=False)
    assert matches_any("*", 'W/"abc"', weak=False)


@settings(max_examples=200, deadline=None)
@given(
    tags=st.lists(
        st.tuples(st.booleans(), st.text(alphabet="abcdef,;:=/ ", min_size=0, max_size=8)),
        max_size=10,
    ),
    wanted=st.text(alphabet="abcdef,", max_size=8),
)
def test_matches_any_agrees_with_a_list_model(tags: list[tuple[bool, str]], wanted: str) -> None:
    header = ", ".join(("W/" if weak else "") + f'"{tag}"' for weak, tag in tags)
    etag = f'"{wanted}"'
    assert matches_any(header, etag, weak=True) == any(tag == wanted for _, tag in tags)
    assert matches_any(header, etag, weak=False) == any(
        tag == wanted and not weak for weak, tag in tags
    )


def test_thousands_of_tags_are_scanned_once() -> None:
    scanned = {"n": 0}
    original = _ranges._entity_tags

    def counting(value: str) -> Any:
        for item in original(value):
            scanned["n"] += 1
            yield item

    _ranges._entity_tags = counting
    try:
        header = ", ".join(f'"tag{i}"' for i in range(5000))
        assert not matches_any(header, '"other"', weak=True)
        assert scanned["n"] == 5000
    finally:
        _ranges._entity_tags = original


# -- dates ---------------------------------------------------------------------------------

EPOCH_2024 = 1_704_067_200  # 2024-01-01T00:00:00Z


@pytest.mark.parametrize(
    "text",
    [
        "Mon, 01 Jan 2024 00:00:00 GMT",  # IMF-fixdate
        "Monday, 01-Jan-24 00:00:00 GMT",  # RFC 850
        "Mon Jan  1 00:00:00 2024",  # asctime
    ],
)
def test_parse_http_date_formats(text: str) -> None:
    assert parse_http_date(text) == EPOCH_2024


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "Mon, 99 Foo 2024 00:00:00 GMT",
        "x" * 10_000,
        # A list of dates: a conditional header with more than one member is ignored.
        "Mon, 01 Jan 2024 00:00:00 GMT, Tue, 02 Jan 2024 00:00:00 GMT",
        "Mon, 01 Jan 2024 00:00:00 GMT garbage",  # text after the date
        "Mon, 01 Jan 2024 00:00:00 +0500",  # another zone than GMT
        "Mon, 01 Jan 2024 00:00:00 UTC",
        "01 Jan 2024 00:00:00 GMT",  # no day name
        "Mon, 1 Jan 2024 00:00:00 GMT",  # IMF-fixdate has two-digit days
        "Mon, 01 Jan 24 00:00:00 GMT",
        "Mon, 01 Jan 2024 24:00:00 GMT",  # no such time
        "Mon, 01 Jan 2024 99:99:99 GMT",
        "Fri, 30 Feb 2024 00:00:00 GMT",  # no such day
        "Mon, 01 Jan 0000 00:00:00 GMT",
        "mon, 01 jan 2024 00:00:00 gmt",  # the names are case-sensitive
        "Mon, 01 Jan 2024",
        "Monday, 01-Jan-2024 00:00:00 GMT",  # RFC 850 has two-digit years
        "Mon Jan 1 00:00:00 2024",  # asctime pads the day with a space
        "Mon, 01 Jan 2024 00:00:00 GMT\x00",
    ],
)
def test_parse_http_date_rejects(text: str) -> None:
    assert parse_http_date(text) is None


def test_parse_http_date_leap_second_and_whitespace() -> None:
    assert parse_http_date("Sun, 31 Dec 2023 23:59:60 GMT") == EPOCH_2024
    assert parse_http_date("  Mon, 01 Jan 2024 00:00:00 GMT\t") == EPOCH_2024


def test_rfc850_two_digit_years_are_never_more_than_50_years_ahead() -> None:
    this_year = time.gmtime().tm_year
    for years_ahead in (-30, 0, 49, 50, 51, 70):
        year = this_year + years_ahead
        text = time.strftime("%A, %d-%b-%y 00:00:00 GMT", (year, 6, 1, 0, 0, 0, 0, 1, 0))
        expected = year if years_ahead <= 50 else year - 100
        assert parse_http_date(text) == calendar.timegm((expected, 6, 1, 0, 0, 0)), text


@settings(max_examples=300, deadline=None)
@given(st.integers(-2_000_000_000, 250_000_000_000))
def test_parse_http_date_reads_back_each_form(seconds: int) -> None:
    moment = time.gmtime(seconds)
    assert parse_http_date(formatdate(seconds, usegmt=True)) == seconds
    # asctime, with the day padded by a space (the C library's own layout)
    day = f"{moment.tm_mday:2d}"
    asctime = time.strftime(f"%a %b {day} %H:%M:%S %Y", moment)
    assert parse_http_date(asctime) == seconds


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="MonTueJanGMT, :-0123456789", max_size=40))
def test_parse_http_date_never_fails_on_junk(text: str) -> None:
    result = parse_http_date(text)
    assert result is None or isinstance(result, int)


# -- preconditions --------------------------------------------------------------------------

ETAG = '"abc"'
MODIFIED = EPOCH_2024
NOW = EPOCH_2024 + 3600


def _evaluate(**headers: str) -> int | None:
    values: dict[str, str | None] = {
        "if_match": None,
        "if_none_match": None,
        "if_modified_since": None,
        "if_unmodified_since": None,
    }
    values.update(headers)
    return evaluate_preconditions(etag=ETAG, last_modified=MODIFIED, now=NOW, **values)


def _date(seconds: float) -> str:
    return formatdate(seconds, usegmt=True)


def test_no_preconditions() -> None:
    assert _evaluate() is None


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({"if_none_match": ETAG}, NOT_MODIFIED),
        ({"if_none_match": 'W/"abc"'}, NOT_MODIFIED),
        ({"if_none_match": '"zzz", "abc"'}, NOT_MODIFIED),
        ({"if_none_match": "*"}, NOT_MODIFIED),
        ({"if_none_match": '"zzz"'}, None),
        ({"if_modified_since": _date(MODIFIED)}, NOT_MODIFIED),
        ({"if_modified_since": _date(MODIFIED + 10)}, NOT_MODIFIED),
        ({"if_modified_since": _date(MODIFIED - 1)}, None),
        ({"if_modified_since": _date(NOW + 86400)}, None),  # in the future: ignored
        ({"if_modified_since": "garbage"}, None),
        # If-None-Match present: If-Modified-Since is not looked at.
        ({"if_none_match": '"zzz"', "if_modified_since": _date(MODIFIED)}, None),
        ({"if_match": ETAG}, None),
        ({"if_match": "*"}, None),
        ({"if_match": '"zzz"'}, PRECONDITION_FAILED),
        ({"if_match": 'W/"abc"'}, PRECONDITION_FAILED),  # strong comparison
        ({"if_unmodified_since": _date(MODIFIED)}, None),
        ({"if_unmodified_since": _date(MODIFIED - 1)}, PRECONDITION_FAILED),
        ({"if_unmodified_since": "garbage"}, None),
        # A list of dates is not a date: ignored (RFC 9110 sections 13.1.3 and 13.1.4).
        ({"if_modified_since": f"{_date(MODIFIED)}, {_date(MODIFIED)}"}, None),
        ({"if_unmodified_since": f"{_date(MODIFIED - 1)}, {_date(MODIFIED - 1)}"}, None),
        # If-Match present: If-Unmodified-Since is not looked at.
        ({"if_match": ETAG, "if_unmodified_since": _date(MODIFIED - 1)}, None),
        # If-Match is evaluated before If-None-Match.
        ({"if_match": '"zzz"', "if_none_match": ETAG}, PRECONDITION_FAILED),
        ({"if_match": ETAG, "if_none_match": ETAG}, NOT_MODIFIED),
    ],
)
def test_preconditions(headers: dict[str, str], outcome: int | None) -> None:
    assert _evaluate(**headers) == outcome


def test_if_range() -> None:
    assert if_range_allows(ETAG, ETAG, MODIFIED, NOW)
    assert not if_range_allows('"zzz"', ETAG, MODIFIED, NOW)
    assert not if_range_allows('W/"abc"', ETAG, MODIFIED, NOW)  # weak never matches
    assert not if_range_allows(ETAG, 'W/"abc"', MODIFIED, NOW)
    assert not if_range_allows('"abc", "abc"', ETAG, MODIFIED, NOW)  # one tag only
    assert if_range_allows(_date(MODIFIED), ETAG, MODIFIED, NOW)
    assert not if_range_allows(_date(MODIFIED + 1), ETAG, MODIFIED, NOW)  # exact match only
    assert not if_range_allows(_date(MODIFIED), ETAG, MODIFIED, MODIFIED + 0.5)  # too recent
    assert not if_range_allows("garbage", ETAG, MODIFIED, NOW)


# -- every parser of this module is linear in its input ----------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "function"),
    [
        ("many ranges", lambda n: "bytes=" + "0-1," * n, lambda h: parse_range(h, 10**9, 10**9)),
        ("many commas", lambda n: "bytes=" + "," * n + "0-1", lambda h: parse_range(h, 100, 100)),
        ("long numbers", lambda n: "bytes=" + "9" * n + "-", lambda h: parse_range(h, 100, 100)),
        ("leading zeros", lambda n: "bytes=" + "0" * n + "1-", lambda h: parse_range(h, 10, 10)),
        ("many tags", lambda n: '"x", ' * n, lambda h: matches_any(h, '"y"', weak=True)),
        ("an open quote", lambda n: '"' + "x" * n, lambda h: matches_any(h, '"y"', weak=False)),
        ("weak prefixes", lambda n: "W/" * n, lambda h: matches_any(h, '"y"', weak=True)),
        ("a long date", lambda n: "Mon, " * n, parse_http_date),
        ("a long If-Range", lambda n: '"' * n, lambda h: if_range_allows(h, '"y"', 0, 10)),
    ],
)
def test_parsers_are_linear(name: str, make: Any, function: Any) -> None:
    assert_linear(make, function, 2000)
