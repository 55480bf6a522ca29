"""Rules about what the chart itself made of the values (`plan.chart_check`).

Rendering the real chart is authoritative: a value its schema or validate.yaml refuses would
fail the install (or, worse, the finalize upgrade, with half the cluster migrated), so a refusal
blocks before anything is installed. The message is the chart's own.
"""

from __future__ import annotations

from collections.abc import Iterator

from plan.chart_check import ChartNotRendered, keys_named
from plan.contract import ChartRender
from plan.rules.context import Issue, RuleContext


def chart_rejects_install_values(ctx: RuleContext) -> Iterator[Issue]:
    """The chart must accept the values Cilium is installed with."""
    if isinstance(ctx.chart, ChartRender) and ctx.chart.install_refused:
        yield _refusal(ctx, ctx.chart, "install values", ctx.chart.install_refused)


def chart_rejects_final_values(ctx: RuleContext) -> Iterator[Issue]:
    """The chart must accept the values finalize upgrades Cilium to."""
    chart = ctx.chart
    if (isinstance(chart, ChartRender) and chart.final_refused
            and chart.final_refused != chart.install_refused):  # said once is enough
        yield _refusal(ctx, chart, "final values (the finalize upgrade)", chart.final_refused)


def chart_not_rendered(ctx: RuleContext) -> Iterator[Issue]:
    """The chart should be rendered with the values before the plan is trusted."""
    if isinstance(ctx.chart, ChartNotRendered):
        yield Issue(
            f"The Cilium chart was not rendered with these values, so only the offline checks "
            f"judged them: {ctx.chart.reason}",
            "Make helm available (`--helm PATH`) and the chart reachable, then plan again; "
            "the migration itself renders the chart before installing and stops if it refuses.",
            None,
        )


def _refusal(ctx: RuleContext, render: ChartRender, what: str, message: str) -> Issue:
    chart = f"{render.chart.name} {render.chart.version}"
    keys = keys_named(message, ctx.spec.cilium.extra_values)
    if keys:
        remedy = (f"Change or remove {', '.join(keys)} in cilium.extraValues: the {chart} "
                  "chart does not accept it.")
    else:
        remedy = (f"Change cilium.extraValues (or the spec setting behind the value named) "
                  f"until the {chart} chart accepts the values; `cilium-migrate plan` renders "
                  "it again.")
    return Issue(f"The {chart} chart refuses the {what}: {message}", remedy,
                 ", ".join(keys) or chart)
