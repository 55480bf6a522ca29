"""Numbers typed on the command line, checked as argparse reads them: a bad one is a usage error
that names its flag (exit 1), before anything starts or connects."""

from __future__ import annotations

import argparse
import math

MAX_PORT = 65535


def count(text: str) -> int:
    """A whole number, 0 or more."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def positive(text: str) -> int:
    """A whole number, 1 or more."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1-{MAX_PORT})")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, more than 0; nan and inf are not durations."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # also a number past Python's 4,300-digit limit for int()
        raise argparse.ArgumentTypeError(f"{_short(text)!r} is not a whole number") from None


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
