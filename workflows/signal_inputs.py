"""A signal's input, checked by the workflow that receives it, so that a malformed one is dropped
and logged instead of holding the run.

Anyone who can reach the namespace can signal a migration, and Temporal does not check what a
signal carries. The SDK drops a payload that fails to decode against the handler's type, but it
still calls a handler typed `(request: DecideRequest)` with None for a null payload, and with no
argument or two when that many were sent: the handler raises, the workflow task fails, and the
server retries it forever, so the run stops until someone terminates it. Handlers therefore take
whatever arrived (`*args`) and ask `signal_input` for their model.

Decoding here instead of in the SDK changes no command, so histories replay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow

Model = TypeVar("Model", bound=BaseModel)


def signal_input(model: type[Model], args: Sequence[object], signal: str,
                 required: Sequence[str] = ()) -> Model | None:
    """The one ``model`` that ``args`` hold, or None (logged) when they hold anything else.
    ``required`` names keys the sender always writes although the model has a default for
    them: a payload without them is not one of ours."""
    try:
        return _decode(model, args, required)
    except _Malformed as malformed:
        workflow.logger.warning(f"signal {signal!r} dropped: {malformed}")
        return None


class _Malformed(Exception):
    """Why a signal's input is not the model its handler takes."""


def _decode(model: type[Model], args: Sequence[object], required: Sequence[str]) -> Model:
    name = model.__name__
    if len(args) != 1:
        raise _Malformed(f"expected one {name}, got {len(args)} arguments")
    [payload] = args
    if not isinstance(payload, dict):
        raise _Malformed(f"expected a {name} mapping, got {type(payload).__name__}")
    missing = [key for key in required if key not in payload]
    if missing:
        raise _Malformed(f"{name} without {', '.join(missing)}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}"
                             for e in error.errors(include_url=False)[:5])
        raise _Malformed(f"not a {name}: {problems}") from None
