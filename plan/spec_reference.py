"""A Markdown reference of the spec's fields, generated from its JSON Schema (README, `schema`)."""

from __future__ import annotations

import json
from typing import Any

from plan.spec_loader import spec_json_schema


def _type(field: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in field:
        return "object"
    if "anyOf" in field:
        return " or ".join(_type(option, defs) for option in field["anyOf"])
    if "enum" in field:
        return " \\| ".join(f"`{v}`" for v in field["enum"])
    if "const" in field:
        return f"`{field['const']}`"
    kind = field.get("type", "any")
    if kind == "array":
        return f"list of {_type(field.get('items', {}), defs)}"
    if kind == "string" and field.get("pattern"):
        return "string (pattern)"
    return str(kind)


def _rows(properties: dict[str, Any], required: list[str], prefix: str,
          defs: dict[str, Any]) -> list[str]:
    rows = []
    for name, field in properties.items():
        path = f"{prefix}{name}"
        ref = field.get("$ref") or next((o["$ref"] for o in field.get("anyOf", [])
                                         if "$ref" in o), None)
        if ref:
            target = defs[ref.rsplit("/", 1)[-1]]
            rows += _rows(target.get("properties", {}), target.get("required", []),
                          f"{path}.", defs)
            continue
        default = "required" if name in required else (
            f"`{json.dumps(field['default'])}`" if "default" in field else "")
        description = " ".join(field.get("description", "").split())
        rows.append(f"| `{path}` | {_type(field, defs)} | {default} | {description} |")
    return rows


def spec_reference() -> str:
    schema = spec_json_schema()
    defs = schema.get("$defs", {})
    lines = ["| field | type | default | notes |", "|---|---|---|---|"]
    lines += _rows(schema["properties"], schema.get("required", []), "", defs)
    return "\n".join(lines)
