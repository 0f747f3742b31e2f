"""Pure parsing and value checks: bodies shaped as in protocols.md §5/§6, field-level asserts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ingest.metrics.parse import parse_coingecko_global, parse_fear_greed
from ingest.metrics.values import BadValue, numeric_text, to_decimal, unix_seconds
from tests.metrics.fakeapi import COINGECKO_BODY, FNG_LATEST, fng_history

NOW = 1_800_000_000.0


def by_key(records: list) -> dict[tuple[str, str], object]:
    return {(r.metric_type, r.metadata.get("name", "")): r for r in records}


def test_coingecko_global_fields() -> None:
    parsed = parse_coingecko_global(COINGECKO_BODY, NOW)
    rows = by_key(parsed.records)
    ts = datetime(2024, 1, 23, 9, 38, 50, tzinfo=UTC)  # updated_at 1706002730
    expected = {
        ("btc_dominance", ""): ("47.82057011844006", "percent"),
        ("total_market_cap", ""): ("2721226850772.63", "usd"),
        ("other", "eth_dominance"): ("16.943340351591583", "percent"),
        ("other", "total_volume_usd"): ("69327091133.54", "usd"),
        ("other", "market_cap_change_percentage_24h_usd"): ("-5.032104325648996", "percent"),
        ("other", "active_cryptocurrencies"): ("13690", "count"),
        ("other", "markets"): ("1046", "count"),
    }
    assert set(rows) == set(expected)
    for key, (value, unit) in expected.items():
        r = rows[key]
        assert r.value == value, key  # the source's own digits, not a float's
        assert r.timestamp == ts
        assert r.metadata["source"] == "coingecko"
        assert r.metadata["unit"] == unit
        assert r.recv_ts == NOW
    assert parsed.skipped == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"data": {"market_cap_percentage": {"eth": 1}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "missing_field"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "updated_at": 1706002730}}',
         "missing_field"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "total_market_cap": {"usd": 1}}}',
         "missing_field"),
        (b'{"status": {"error_code": 429}}', "missing_field"),
        (b'{"data": []}', "missing_field"),
        (b'{"data": {"market_cap_percentage": {"btc": "lots"}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "bad_value"),
        (b'{"data": {"market_cap_percentage": {"btc": NaN}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "invalid_json"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "total_market_cap": {"usd": Infinity},'
         b' "updated_at": 1706002730}}', "invalid_json"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "total_market_cap": {"usd": 1e999},'
         b' "updated_at": 1706002730}}', "out_of_range"),
        (b'{"data": {"market_cap_percentage": {"btc": -3}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "bad_value"),
        (b'{"data": {"market_cap_percentage": {"btc": 140}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "bad_value"),
        (b'{"data": {"market_cap_percentage": {"btc": true}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730}}', "bad_value"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "total_market_cap": {"usd": 1},'
         b' "updated_at": "yesterday"}}', "bad_timestamp"),
        (b'{"data": {"market_cap_percentage": {"btc": 47}, "total_market_cap": {"usd": 1},'
         b' "updated_at": 1706002730000}}', "bad_timestamp"),  # milliseconds, not seconds
        (b'{"data": {"market_cap_perc', "invalid_json"),
        (b"<!DOCTYPE html><html><body>Just a moment...</body></html>", "html_page"),
        (b"", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"data": {"markets": 1' + b"0" * 5000 + b"}}", "invalid_json"),
    ],
)
def test_coingecko_bad_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(BadValue) as info:
        parse_coingecko_global(body, NOW)
    assert info.value.reason == reason
    assert len(info.value.detail) < 400  # truncated for the log line


def test_coingecko_optional_field_bad_is_skipped_not_fatal() -> None:
    body = (b'{"data": {"market_cap_percentage": {"btc": 50.5, "eth": "n/a"},'
            b' "total_market_cap": {"usd": 2.5e12}, "markets": -1, "updated_at": 1706002730}}')
    parsed = parse_coingecko_global(body, NOW)
    rows = by_key(parsed.records)
    assert set(rows) == {("btc_dominance", ""), ("total_market_cap", "")}
    assert rows[("total_market_cap", "")].value == "2500000000000"
    assert len(parsed.skipped) == 5  # eth (bad), markets (negative), 3 missing extras


def test_fear_greed_latest() -> None:
    parsed = parse_fear_greed(FNG_LATEST, NOW)
    [r] = parsed.records
    assert r.metric_type == "fear_greed_index"
    assert r.value == "47"
    assert r.timestamp == datetime.fromtimestamp(1777248000, UTC)
    assert r.metadata == {"source": "alternative.me", "classification": "Neutral"}
    assert "name" not in r.metadata  # metric_name '' in the unique key


def test_fear_greed_history_skips_bad_entries_and_duplicates() -> None:
    body = (b'{"data": ['
            b' {"value": "47", "value_classification": "Neutral", "timestamp": "1777248000"},'
            b' {"value": "47", "value_classification": "Neutral", "timestamp": "1777248000"},'
            b' {"value": "abc", "timestamp": "1777161600"},'
            b' {"value": "101", "timestamp": "1777075200"},'
            b' {"value": "33.5", "timestamp": "1776988800"},'
            b' {"value": "NaN", "timestamp": "1776902400"},'
            b' {"value": "20", "timestamp": "not-a-time"},'
            b' {"value": "12", "value_classification": "Extreme Fear", "timestamp": "1776729600"}],'
            b' "metadata": {"error": null}}')
    parsed = parse_fear_greed(body, NOW)
    assert [(r.value, int(r.timestamp.timestamp())) for r in parsed.records] == [
        ("47", 1777248000), ("12", 1776729600)]
    assert len(parsed.skipped) == 5


def test_fear_greed_full_history() -> None:
    parsed = parse_fear_greed(fng_history(30), NOW)
    assert len(parsed.records) == 30
    assert len({r.timestamp for r in parsed.records}) == 30


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"data": [], "metadata": {"error": null}}', "missing_field"),
        (b'{"data": null, "metadata": {"error": "Limit must be a number"}}', "api_error"),
        (b'{"data": [{"value": "abc", "timestamp": "1777248000"}]}', "bad_value"),
        (b'{"data": [{"timestamp": "1777248000"}]}', "missing_field"),
        (b'{"data": [{"value": "50"}]}', "missing_field"),
        (b'{"name": "Fear and Greed Index"}', "missing_field"),
        (b"<html>502 Bad Gateway</html>", "html_page"),
    ],
)
def test_fear_greed_bad_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(BadValue) as info:
        parse_fear_greed(body, NOW)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("47.82057011844006", "47.82057011844006"),
        ("2721226850772.63", "2721226850772.63"),
        ("1E+3", "1000"),
        ("0.000000000000000001", "0.000000000000000001"),
        # more than 18 fractional digits: rounded half-even at the 18th
        ("0.1234567890123456785", "0.123456789012345678"),
        ("0.1234567890123456775", "0.123456789012345678"),
        ("0.12345678901234567851", "0.123456789012345679"),
        ("1e-19", "0.000000000000000000"),
        ("99999999999999999999.999999999999999999", "99999999999999999999.999999999999999999"),
    ],
)
def test_numeric_text_fits_numeric_38_18(text: str, expected: str) -> None:
    assert numeric_text(Decimal(text), "x") == expected


@pytest.mark.parametrize(
    "text",
    ["1e20", "100000000000000000000", "99999999999999999999.9999999999999999999", "NaN",
     "Infinity", "-Infinity", "-1", "-0.5"],
)
def test_numeric_text_rejects(text: str) -> None:
    with pytest.raises(BadValue):
        numeric_text(Decimal(text), "x")


def test_numeric_text_negative_allowed_and_negative_zero() -> None:
    assert numeric_text(Decimal("-5.25"), "x", allow_negative=True) == "-5.25"
    assert numeric_text(Decimal("-1e-19"), "x", allow_negative=True) == "0.000000000000000000"


@pytest.mark.parametrize("raw", ["NaN", "nan", "Infinity", "inf", "1,000", "0x10", "", " ", None,
                                 True, 1.5, [], {}])
def test_to_decimal_rejects(raw: object) -> None:
    with pytest.raises(BadValue):
        to_decimal(raw, "x")


def test_to_decimal_accepts_exact() -> None:
    assert to_decimal(Decimal("47.82057011844006"), "x") == Decimal("47.82057011844006")
    assert to_decimal("47", "x") == Decimal(47)
    assert to_decimal(12414, "x") == Decimal(12414)


def test_unix_seconds_window() -> None:
    assert unix_seconds("1777248000", "t", NOW) == datetime.fromtimestamp(1777248000, UTC)
    assert unix_seconds(1706002730, "t", NOW).year == 2024
    for bad in (0, 1_000_000_000, int(NOW) + 3 * 86400, "-5", "1.5", 1.5, True):
        with pytest.raises(BadValue):
            unix_seconds(bad, "t", NOW)
