"""Checking the Helm values with the chart itself, before anything is installed.

The offline checks (`plan.helm_values`) only know the chart data shipped with cilium-migrate;
the chart that will be installed is the one that decides, through its values.schema.json and
its templates/validate.yaml. The render step (`Activity.RENDER_CHART`) runs `helm template`
with both phases' values against the discovered cluster's versions. This module says what to
ask it, and which of the user's extraValues a refusal is about.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from plan.contract import ChartRef, ChartRender, ChartRenderInput
from plan.facts import ClusterFacts
from plan.helm_values import Values, final_values, flatten, initial_values, split_key
from plan.spec import MigrationSpec


class ChartNotRendered(BaseModel):
    """The chart could not be rendered (no helm, the chart could not be fetched): why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: str


# What the plan knows of the chart's own verdict: rendered, not rendered and why, or None when
# nobody asked (a run recorded before rendering existed).
ChartVerdict = ChartRender | ChartNotRendered | None


def chart_ref(spec: MigrationSpec) -> ChartRef:
    """The chart the spec installs; its version is checked against a local chart too, since
    the values were made for that version."""
    chart = spec.cilium.chart
    return ChartRef(repo=chart.repo, name=chart.name, path=chart.path,
                    version=spec.cilium.version)


def render_input(spec: MigrationSpec, facts: ClusterFacts) -> ChartRenderInput:
    return ChartRenderInput(
        chart=chart_ref(spec), namespace=spec.cilium.namespace,
        install_values=initial_values(spec, facts), final_values=final_values(spec, facts),
        kube_version=facts.server_version, api_versions=facts.api_versions)


def keys_named(message: str, extra_values: Values) -> list[str]:
    """The extraValues keys (dotted) that the chart's message names: where the operator has to
    look. The most specific key wins (`encryption` when the message names
    `encryption.{keyFile,...}` and extraValues sets `encryption.keyFile`)."""
    text = message.replace(".Values.", " ")
    candidates: set[str] = set()
    for dotted in flatten(extra_values):
        parts = split_key(dotted)
        candidates.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    named = [key for key in candidates
             if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", text)]
    return sorted(key for key in named
                  if not any(other.startswith(key + ".") for other in named))
