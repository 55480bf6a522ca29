"""Helm values for the Cilium chart: render them for each phase, diff them, check them.

Initial values put Cilium beside flannel (procedure, Phase 1); final values hand the node over
to Cilium alone (Phase 4). The chart's own schema only catches wrong types, so values are also
checked key by key against the chart's default values: a typo must not be installed silently.
Both checks read the chart data shipped for the version installed (`plan/data/cilium-X.Y.Z/`),
or the nearest shipped version when there is none for it (`values_data_version` says which);
rendering the real chart (`plan.chart_check`) is what decides in the end.

Values are plain JSON-like dicts; dotted keys escape literal dots as `\\.`, like `helm --set`.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

from plan.api_endpoint import agent_api_endpoint
from plan.facts import ClusterFacts
from plan.spec import MigrationSpec

Values = dict[str, Any]

# Keys the procedure decides; extraValues changing them would undo the migration's design.
MIGRATION_KEYS: tuple[str, ...] = (
    "routingMode",
    "tunnelProtocol",
    "tunnelPort",
    "ipam.mode",
    "ipam.operator.clusterPoolIPv4PodCIDRList",
    "cni.customConf",
    "cni.uninstall",
    "policyEnforcementMode",
    "bpf.hostLegacyRouting",
    "operator.unmanagedPodWatcher.restart",
)

# Chart keys whose content goes verbatim into Kubernetes objects: any sub-key is legitimate there,
# even where the chart's defaults happen to show only a few.
_PASSTHROUGH = frozenset(
    {
        "affinity",
        "annotations",
        "labels",
        "lifecycle",
        "livenessProbe",
        "nodeSelector",
        "podAnnotations",
        "podLabels",
        "podSecurityContext",
        "readinessProbe",
        "resources",
        "securityContext",
        "startupProbe",
        "tlsConfig",
        "updateStrategy",
    }
)


def initial_values(spec: MigrationSpec, facts: ClusterFacts) -> Values:
    """Values for installing Cilium in secondary mode beside flannel, extraValues merged last."""
    return merge_values(migration_values(spec, facts), spec.cilium.extra_values)


def migration_values(spec: MigrationSpec, facts: ClusterFacts) -> Values:
    """The values the procedure itself sets for Phase 1, before the user's extraValues."""
    values: Values = {"cluster": {"name": spec.cluster.name}}
    # Where agents reach the API server from the nodes; unset means the kubernetes Service.
    endpoint = agent_api_endpoint(spec, facts)
    if endpoint is not None:
        values["k8sServiceHost"] = endpoint.host
        values["k8sServicePort"] = endpoint.port
    return values | {
        # Old pods keep their flannel IPs until their node migrates; do not restart them now.
        "operator": {"unmanagedPodWatcher": {"restart": False}},
        "routingMode": "tunnel",
        "tunnelProtocol": spec.network.tunnel_protocol,
        "tunnelPort": spec.network.tunnel_port,
        # No CNI config yet (the per-node override writes it), and keep it if the agent stops.
        "cni": {"customConf": True, "uninstall": False},
        "ipam": {
            "mode": "cluster-pool",
            "operator": {
                "clusterPoolIPv4PodCIDRList": [str(cidr) for cidr in spec.network.pod_cidrs]
            },
        },
        # Policies cannot be enforced while half the pods are on another CNI.
        "policyEnforcementMode": "never",
        # The kernel routes between the two overlays.
        "bpf": {"hostLegacyRouting": True},
    }


def final_values(spec: MigrationSpec, facts: ClusterFacts) -> Values:
    """Values once every node runs Cilium: IPAM and tunnel settings stay as they were."""
    switches: Values = {
        "operator": {"unmanagedPodWatcher": {"restart": True}},
        "cni": {"customConf": False},
        "policyEnforcementMode": "default",
        "bpf": {"hostLegacyRouting": spec.finalize.host_legacy_routing},
    }
    return merge_values(initial_values(spec, facts), switches)


def merge_values(base: Values, overlay: Values) -> Values:
    """Merge `overlay` into a copy of `base` the way Helm does: maps merge, null deletes."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def value_at(values: Values, dotted: str) -> Any:
    """The value at a dotted key, or None when any part of the path is absent."""
    current: Any = values
    for part in split_key(dotted):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def flatten(values: Values) -> dict[str, Any]:
    """Dotted key -> leaf value. Lists and empty maps are leaves."""
    flat: dict[str, Any] = {}
    pending: list[tuple[str, Any]] = [("", values)]
    while pending:
        prefix, current = pending.pop()
        if isinstance(current, dict) and current:
            for key, child in current.items():
                pending.append((_join(prefix, str(key)), child))
        elif prefix:
            flat[prefix] = current
    return dict(sorted(flat.items()))


def values_diff(initial: Values, final: Values) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) for every leaf that differs, sorted by key; absent reads as None."""
    old, new = flatten(initial), flatten(final)
    return [
        (key, old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) or (key in old) != (key in new)
    ]


def schema_errors(values: Values, chart_version: str) -> list[str]:
    """Violations of the chart's values.schema.json, each led by its dotted key."""
    messages = []
    for error in _chart_data(values_data_version(chart_version)).validator.iter_errors(values):
        key = _render_path(list(error.absolute_path)) or "(top level)"
        messages.append(f"{key}: {_clip(error.message)}")
    return sorted(messages)


def unknown_keys(values: Values, chart_version: str) -> list[str]:
    """Key paths the chart does not know, each with the closest known key when there is one."""
    data = _chart_data(values_data_version(chart_version))
    messages = []
    pending: list[tuple[str, Values, dict[str, Any]]] = [("", values, data.known)]
    while pending:
        prefix, given, known = pending.pop()
        for key, child in given.items():
            dotted = _join(prefix, str(key))
            if key not in known:
                messages.append(
                    f"{dotted}: not a key of the Cilium chart{_hint(key, known, data)}")
            elif isinstance(known[key], dict) and isinstance(child, dict):
                pending.append((dotted, child, known[key]))
            # Anything else is either open (free-form) or a type question for the schema.
    return sorted(messages)


# --- chart data, per chart version ----------------------------------------------------------

_DATA_DIR = re.compile(r"^cilium-(\d+)\.(\d+)\.(\d+)$")


@cache
def shipped_versions() -> tuple[str, ...]:
    """Chart versions whose values.yaml and values.schema.json ship in plan/data, oldest first."""
    found = [(tuple(int(n) for n in match.groups()), match.group(0).removeprefix("cilium-"))
             for entry in resources.files(__package__).joinpath("data").iterdir()
             if entry.is_dir() and (match := _DATA_DIR.match(entry.name))]
    return tuple(version for _, version in sorted(found))


def values_data_version(chart_version: str) -> str:
    """The shipped chart data to check `chart_version`'s values against: its own when shipped,
    else the nearest release (same major and minor first, then the closest patch; an older one
    on a tie, since keys are more often added than removed)."""
    shipped = shipped_versions()
    if chart_version in shipped:
        return chart_version
    wanted = _version_tuple(chart_version)

    def distance(version: str) -> tuple[int, int, int, int]:
        have = _version_tuple(version)
        return (abs(have[0] - wanted[0]), abs(have[1] - wanted[1]), abs(have[2] - wanted[2]),
                0 if have <= wanted else 1)

    return min(shipped, key=distance)


def _version_tuple(version: str) -> tuple[int, int, int]:
    numbers = re.findall(r"\d+", version.split("-", 1)[0].split("+", 1)[0])
    padded = [*(int(n) for n in numbers[:3]), 0, 0, 0]
    return padded[0], padded[1], padded[2]


# A node of the known-key tree: a dict of children, or OPEN where any sub-key is acceptable,
# or LEAF where the chart expects a scalar or list.
OPEN = "open"
LEAF = "leaf"


@dataclass(frozen=True)
class _ChartValuesData:
    validator: jsonschema.Draft7Validator
    known: dict[str, Any]  # the known-key tree
    by_last_key: dict[str, list[str]]  # every known dotted key, by its last part, lower case


@cache
def _chart_data(version: str) -> _ChartValuesData:
    folder = resources.files(__package__).joinpath("data", f"cilium-{version}")
    validator = jsonschema.Draft7Validator(
        json.loads(folder.joinpath("values.schema.json").read_text(encoding="utf-8")))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 10x faster
    defaults = yaml.load(folder.joinpath("values.yaml").read_text(encoding="utf-8"),
                         Loader=loader)
    known = _tree_of(defaults)
    # The schema names a few keys the defaults leave out (e.g. "global" for subcharts).
    for key in validator.schema.get("properties", {}):
        known.setdefault(key, OPEN)
    return _ChartValuesData(validator, known, _paths_by_last_key(known))


def _tree_of(defaults: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in defaults.items():
        if key in _PASSTHROUGH or value is None or value == {}:
            tree[key] = OPEN
        elif isinstance(value, dict):
            tree[key] = _tree_of(value)
        else:
            tree[key] = LEAF
    return tree


def _paths_by_last_key(known: dict[str, Any]) -> dict[str, list[str]]:
    """Every known dotted key, indexed by its last part, for 'did you mean' across sections."""
    index: dict[str, list[str]] = {}
    pending: list[tuple[str, dict[str, Any]]] = [("", known)]
    while pending:
        prefix, tree = pending.pop()
        for key, child in tree.items():
            dotted = _join(prefix, key)
            index.setdefault(key.lower(), []).append(dotted)
            if isinstance(child, dict):
                pending.append((dotted, child))
    return {key: sorted(paths) for key, paths in index.items()}


def _hint(key: object, siblings: dict[str, Any], data: _ChartValuesData) -> str:
    close = difflib.get_close_matches(str(key), list(siblings), n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]}?)"
    elsewhere = data.by_last_key.get(str(key).lower(), [])
    if elsewhere:
        return f" (did you mean {elsewhere[0]}?)"
    return ""


# --- dotted keys ----------------------------------------------------------------------------


def _escape(part: str) -> str:
    return part.replace(".", "\\.")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{_escape(key)}" if prefix else _escape(key)


def _render_path(parts: list[str | int]) -> str:
    rendered = ""
    for part in parts:
        if isinstance(part, int):
            rendered += f"[{part}]"
        else:
            rendered = _join(rendered, part)
    return rendered


def split_key(dotted: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in dotted:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ".":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _clip(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
