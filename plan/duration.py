"""Durations as people write them in a spec ("90s", "15m", "1h30m", or plain seconds).

The spec travels through Temporal as JSON, so a duration must survive a round trip: it is
serialised back into the same compact form this module parses, never into ISO 8601, which the
parser would not read.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

# Long enough for any drain, reboot or probe; short enough that a typo such as "15000h" is caught
# instead of silently meaning "wait for ever".
MAX_DURATION = timedelta(days=7)

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d{1,9})([dhms])")
_WHOLE = re.compile(r"(?:\d{1,9}[dhms])+")

_EXPECTED = 'a positive duration such as "90s", "15m", "1h30m" or a number of seconds'


def parse_duration(value: object, maximum: timedelta = MAX_DURATION) -> timedelta:
    """Read a duration from a spec value; raise ValueError with a readable reason."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        # bool is an int subclass; "true" as a timeout is a mistake, not one second.
        raise ValueError(f"expected {_EXPECTED}, got a boolean")
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        seconds = _parse_text(value.strip())
    else:
        raise ValueError(f"expected {_EXPECTED}, got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError(f"expected {_EXPECTED}; zero or negative durations make no sense here")
    if seconds > maximum.total_seconds():
        raise ValueError(f"expected at most {format_duration(maximum)}")
    return timedelta(seconds=seconds)


def _parse_text(text: str) -> int:
    if text.lstrip("-").isdigit() and len(text) <= 12:
        return int(text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"expected {_EXPECTED}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def format_duration(value: timedelta) -> str:
    """Render a duration in the compact form parse_duration reads ("1h30m", "45s")."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    PlainValidator(parse_duration),
    # Python-mode dumps keep the timedelta; JSON dumps (Temporal payloads, reports) use the text.
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^([0-9]+[dhms])+$"},
                {"type": "integer", "minimum": 1},
            ],
            "description": 'Duration: "90s", "15m", "1h30m", "1d" or whole seconds.',
        }
    ),
]
"""A strictly positive duration of at most MAX_DURATION, as used by the spec."""
