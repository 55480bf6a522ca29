"""Label selectors as the node's own components read them, kept apart from the product's
matcher so that a bug in one is not mirrored, and hidden, by the other.

Follows apimachinery's `metav1.LabelSelectorAsSelector` (pkg/apis/meta/v1/helpers.go): a nil
selector selects nothing, an empty one everything; matchLabels and matchExpressions are ANDed;
`In`/`NotIn` need at least one value and `Exists`/`DoesNotExist` none, anything else is an error
(the Cilium agent then ignores that CiliumNodeConfig and logs it).
"""

from __future__ import annotations

from typing import Any


class InvalidSelector(ValueError):
    pass


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether ``selector`` selects an object with ``labels``; InvalidSelector if malformed."""
    if selector is None:
        return False
    requirements = [(key, "In", [value])
                    for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        requirements.append((expression.get("key", ""), expression.get("operator", ""),
                             list(expression.get("values") or [])))
    return all(_requirement_holds(key, operator, values, labels)
               for key, operator, values in requirements)


def _requirement_holds(key: str, operator: str, values: list[str],
                       labels: dict[str, str]) -> bool:
    if not key:
        raise InvalidSelector("a requirement without a key")
    if operator in ("In", "NotIn"):
        if not values:
            raise InvalidSelector(f"{key} {operator}: needs at least one value")
        if operator == "In":
            return key in labels and labels[key] in values
        return key not in labels or labels[key] not in values
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise InvalidSelector(f"{key} {operator}: takes no values")
        return (key in labels) is (operator == "Exists")
    raise InvalidSelector(f"{key}: unknown operator {operator!r}")
