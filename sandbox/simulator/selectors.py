"""Kubernetes label selectors (matchLabels and matchExpressions) evaluated against labels."""

from __future__ import annotations

from typing import Any


def selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """An empty selector matches everything, as in the API."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True
