"""The next-run maths, from a table (arq style): no clock, no loop, no sleeping."""

from __future__ import annotations

import pytest

from ingest.metrics.schedule import MAX_RETRY_AFTER_S, next_run, parse_retry_after

# (case, last_start, last_end, interval, jitter, rand, failures, not_before, expected)
CASES = [
    ("on time, no jitter", 1000, 1002, 600, 0, 0.5, 0, None, 1600),
    ("anchored at the start, not the end", 1000, 1090, 600, 0, 0.0, 0, None, 1600),
    ("jitter lower bound", 1000, 1002, 600, 30, 0.0, 0, None, 1600),
    ("jitter middle", 1000, 1002, 600, 30, 0.5, 0, None, 1615),
    ("jitter upper bound (rand < 1)", 1000, 1002, 600, 30, 0.999, 0, None, 1629.97),
    ("jitter capped at half the interval", 1000, 1002, 60, 3600, 1.0, 0, None, 1090),
    ("overrun skips the missed slot", 1000, 1700, 600, 0, 0.0, 0, None, 2200),
    ("overrun by several slots", 1000, 2900, 600, 0, 0.0, 0, None, 3400),
    ("overrun ending exactly on a slot", 1000, 2200, 600, 0, 0.0, 0, None, 2200),
    ("overrun plus jitter", 1000, 1700, 600, 30, 0.5, 0, None, 2215),
    ("first failure retries after the base", 1000, 1010, 600, 0, 0.0, 1, None, 1070),
    ("second failure doubles", 1000, 1010, 600, 0, 0.0, 2, None, 1130),
    ("third failure doubles again", 1000, 1010, 600, 0, 0.0, 3, None, 1250),
    ("back-off capped at the interval", 1000, 1010, 600, 0, 0.0, 5, None, 1610),
    ("many failures: still capped, no overflow", 1000, 1010, 600, 0, 0.0, 5000, None, 1610),
    ("failure plus jitter", 1000, 1010, 600, 30, 0.5, 1, None, 1085),
    ("Retry-After beyond the slot pushes the run", 1000, 1010, 600, 30, 0.5, 1, 4610, 4610),
    ("Retry-After before the slot changes nothing", 1000, 1002, 600, 0, 0.0, 0, 1100, 1600),
    ("daily source", 0, 5, 86400, 30, 0.0, 0, None, 86400),
]


@pytest.mark.parametrize(
    ("last_start", "last_end", "interval", "jitter", "rand", "failures", "not_before", "expected"),
    [c[1:] for c in CASES], ids=[c[0] for c in CASES],
)
def test_next_run_table(last_start: float, last_end: float, interval: float, jitter: float,
                        rand: float, failures: int, not_before: float | None,
                        expected: float) -> None:
    got = next_run(last_start, last_end, interval, jitter, rand, failures=failures,
                   not_before=not_before)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("failures", [0, 1, 3, 50])
@pytest.mark.parametrize("duration", [0.0, 5.0, 599.0, 600.0, 601.0, 5000.0])
@pytest.mark.parametrize("rand", [0.0, 0.25, 0.999])
def test_next_run_never_overlaps_and_jitter_is_bounded(failures: int, duration: float,
                                                       rand: float) -> None:
    start, interval, jitter = 10_000.0, 600.0, 30.0
    end = start + duration
    got = next_run(start, end, interval, jitter, rand, failures=failures)
    no_jitter = next_run(start, end, interval, 0.0, rand, failures=failures)
    assert got >= end  # a job never starts before its previous run ended
    assert no_jitter <= got <= no_jitter + jitter  # jitter only ever later, and bounded
    assert got - end <= interval + jitter  # never waits more than one period after the end


def test_next_run_rejects_nonsense_interval() -> None:
    with pytest.raises(ValueError):
        next_run(0, 0, 0, 0, 0)


NOW_WALL = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Tue, 14 Nov 2023 22:15:20 GMT", 120.0),
        ("Tue, 14 Nov 2023 22:10:00 GMT", 0.0),  # already past
        ("999999999", MAX_RETRY_AFTER_S),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW_WALL) == expected
