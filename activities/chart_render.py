"""Rendering the chart with the migration's values, offline, before anything is installed.

`helm template` runs the chart's own checks, its values.schema.json and templates/validate.yaml,
exactly as an install would, but touches no cluster: it is told the cluster's Kubernetes version
and served API group/versions (from discovery) instead of asking. Each phase's values are
rendered separately, since the finalize values may be refused where the install values are not.

A refusal is the answer, not a failure of the step: it comes back as the chart's own message,
without helm's wrapping. Not being able to fetch the chart, or to run helm, fails the step.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.chart_source import fetch_chart
from activities.context import step_error
from activities.helm_cli import run_helm
from plan.contract import ChartRender, ChartRenderInput, StepError

TEMPLATE_TIMEOUT_SECONDS = 120.0
# How helm_cli words a helm that ran and exited non-zero; anything else (helm missing, a
# timeout) is not the chart's verdict.
_HELM_EXITED = "helm template failed: "
# "Error: execution error at (cilium/templates/validate.yaml:41:5): <the chart's message>"
_TEMPLATE_FAIL = re.compile(r"execution error at \([^)]*\):\s*")
# "- at '/tunnelPort': got string, want integer", one line per schema violation.
_SCHEMA_LINE = re.compile(r"^- at '(?P<pointer>[^']*)':\s*(?P<problem>.*)$")


def render_chart(helm: str, request: ChartRenderInput) -> ChartRender:
    with tempfile.TemporaryDirectory(prefix="cilium-render-") as scratch:
        try:
            chart = fetch_chart(helm, request.chart, Path(scratch))
        except ApplicationError as error:
            raise step_error(StepError.CHART_UNAVAILABLE,
                             f"cannot fetch the Cilium chart to check the values: {error.message}"
                             ) from None
        refused = {}
        for phase, values in (("install", request.install_values),
                              ("final", request.final_values)):
            refused[phase] = _refusal(helm, request, chart.location, values,
                                      Path(scratch) / f"{phase}-values.json")
    return ChartRender(
        chart=chart.installed_from(request.chart),
        install_refused=refused["install"], final_refused=refused["final"])


def _refusal(helm: str, request: ChartRenderInput, chart: Path, values: dict[str, Any],
             values_file: Path) -> str | None:
    """The chart's message when it refuses `values`, None when it renders them."""
    values_file.write_text(json.dumps(values))
    argv = [helm, "template", request.release, str(chart), "--namespace", request.namespace,
            "--values", str(values_file)]
    if request.kube_version:
        argv += ["--kube-version", request.kube_version]
    for api_version in request.api_versions:
        argv += ["--api-versions", api_version]
    try:
        run_helm(argv, TEMPLATE_TIMEOUT_SECONDS)
    except ApplicationError as error:
        if not error.message.startswith(_HELM_EXITED):
            raise step_error(StepError.CHART_UNAVAILABLE,
                             f"cannot render the Cilium chart: {error.message}") from None
        return chart_message(error.message.removeprefix(_HELM_EXITED))
    return None


def chart_message(helm_error: str) -> str:
    """The chart's own words in helm's error output: the validate.yaml `fail` message, or the
    schema violations led by their dotted value path; helm's hints are dropped."""
    lines = [line.strip() for line in helm_error.strip().splitlines()]
    lines = [line.removeprefix("Error: ") for line in lines
             if line and not line.startswith("Use --debug flag")]
    violations = [match for line in lines if (match := _SCHEMA_LINE.match(line))]
    if violations:
        return "; ".join(f"{_dotted(v['pointer'])}: {v['problem']}" for v in violations)
    return " ".join(_TEMPLATE_FAIL.sub("", line) for line in lines)


def _dotted(pointer: str) -> str:
    """A JSON pointer as the dotted value path helm --set uses: /a/b/0 -> a.b[0]."""
    dotted = ""
    for part in pointer.strip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if part.isdigit() and dotted:
            dotted += f"[{part}]"
        else:
            part = part.replace(".", "\\.")
            dotted = f"{dotted}.{part}" if dotted else part
    return dotted or "(top level)"
