"""What every part of the Neon tooling reads alike, without the client: how long to
retry and wait, and durations written ``30m``, ``12h``, ``7d``."""

from __future__ import annotations

import argparse
import re
from datetime import timedelta

DEFAULT_RETRY_FOR_S = 120.0


DEFAULT_WAIT_FOR_S = 300.0


_DURATION = re.compile(r"(\d+)([mhd])")


_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a positive number of m, h or d (30m, 12h, 7d)"
        )
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}")
    return value
