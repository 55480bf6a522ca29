"""Preflight rules, one small function each, grouped by what they look at.

A rule reads a RuleContext and yields Issues; `plan.preflight` registers every rule with its id
and severity and turns Issues into Findings. Adding a rule touches one module here and one line
in the registry.
"""

from plan.rules.context import Issue, RuleContext

__all__ = ["Issue", "RuleContext"]
