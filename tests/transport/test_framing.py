"""Bounded gzip inflation (HTX frames)."""

from __future__ import annotations

import gzip

import pytest

from ingest.transport.framing import FrameRejected, gunzip_bounded


def test_inflates_a_normal_frame() -> None:
    payload = b'{"ch":"market.btcusdt.trade.detail","ts":1}'
    assert gunzip_bounded(gzip.compress(payload), 1024) == payload


def test_exact_limit_is_allowed() -> None:
    assert gunzip_bounded(gzip.compress(b"a" * 100), 100) == b"a" * 100


def test_gzip_bomb_is_rejected_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (32 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pytest.raises(FrameRejected) as info:
        gunzip_bounded(bomb, 1024 * 1024)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"plain bytes", "bad_gzip"),
        (gzip.compress(b"x" * 1000)[:-12], "bad_gzip"),  # truncated
        ("text frame", "not_binary"),
    ],
)
def test_bad_frames_are_rejected(frame: bytes | str, reason: str) -> None:
    with pytest.raises(FrameRejected) as info:
        gunzip_bounded(frame, 1 << 20)
    assert info.value.reason == reason
