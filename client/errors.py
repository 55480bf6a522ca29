"""The one exception type commands raise for expected failures."""

from __future__ import annotations

from client import exit_codes


class CommandError(Exception):
    """An expected failure: printed as one clear message, with its exit code."""

    def __init__(self, message: str, exit_code: int = exit_codes.INVALID_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code
