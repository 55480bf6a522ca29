"""What every rule reads (RuleContext) and what it reports (Issue)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from ipaddress import IPv4Network
from typing import Any, NamedTuple

from plan.chart_check import ChartVerdict
from plan.contract import ChartRender
from plan.facts import ClusterFacts, NodeFacts
from plan.helm_values import Values, final_values, initial_values, migration_values, value_at
from plan.spec import MigrationSpec
from plan.waves import PlanError, Wave, plan_waves


class Issue(NamedTuple):
    """One problem a rule found; the registry adds the rule's id and severity."""

    message: str
    remedy: str
    subject: str | None = None


def some_of(names: list[str], limit: int = 5) -> str:
    """Up to `limit` names, then how many more: keeps messages readable on big clusters."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


@dataclass(frozen=True)
class RuleContext:
    """The spec and facts, plus what several rules derive from them, computed once."""

    spec: MigrationSpec
    facts: ClusterFacts
    chart: ChartVerdict = None  # what the chart made of the values, when it was asked

    @property
    def chart_rendered(self) -> bool:
        """The chart itself judged the values (its schema included)."""
        return isinstance(self.chart, ChartRender)

    @cached_property
    def values(self) -> Values:
        """Initial Helm values as they will be installed (extraValues merged)."""
        return initial_values(self.spec, self.facts)

    @cached_property
    def final(self) -> Values:
        return final_values(self.spec, self.facts)

    @cached_property
    def procedure_values(self) -> Values:
        """Initial Helm values before extraValues: what the procedure asks for."""
        return migration_values(self.spec, self.facts)

    def value(self, dotted: str) -> Any:
        return value_at(self.values, dotted)

    @cached_property
    def nodes(self) -> list[NodeFacts]:
        """Nodes by name, so findings do not depend on the order discovery listed them."""
        return sorted(self.facts.nodes, key=lambda node: node.name)

    @property
    def pod_pools(self) -> list[IPv4Network]:
        return list(self.spec.network.pod_cidrs)

    @cached_property
    def _plan(self) -> tuple[list[Wave], str | None]:
        try:
            return plan_waves(self.spec, self.facts), None
        except PlanError as error:
            return [], str(error)

    @property
    def waves(self) -> list[Wave]:
        """The wave plan; empty when it cannot be made (see plan_error)."""
        return self._plan[0]

    @property
    def plan_error(self) -> str | None:
        return self._plan[1]
