"""Output for humans (tables) and for programs (json, yaml) from the same pydantic models."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel

OUTPUT_FORMATS = ("table", "json", "yaml")


def as_data(model: BaseModel) -> Any:
    return json.loads(model.model_dump_json())


def dump(model: BaseModel, output: str) -> str:
    if output == "json":
        return json.dumps(as_data(model), indent=2)
    return yaml.safe_dump(as_data(model), sort_keys=False)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
