"""`cilium-migrate plan` and `cilium-migrate schema`: what would happen, before anything does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.chart_render import render_chart
from activities.context import ActivityContext
from activities.discovery import DiscoveryError, discover_cluster
from activities.kubeapi import Kube
from client import exit_codes
from client.errors import CommandError
from client.fleet_plan import plan_fleet, render_fleet_plan
from client.rendering import OUTPUT_FORMATS, dump, table
from plan.chart_check import ChartNotRendered, ChartVerdict, render_input
from plan.facts import ClusterFacts
from plan.fleet import Fleet, load_fleet
from plan.planner import MigrationPlan, make_plan
from plan.policies import cluster_ref
from plan.spec import MigrationSpec
from plan.spec_loader import SpecError, load_spec, spec_json_schema
from plan.spec_reference import spec_reference


def register(groups: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = groups.add_parser("plan", help="discover the cluster and show the migration plan")
    which = plan.add_mutually_exclusive_group(required=True)
    which.add_argument("-f", "--filename", type=Path, help="the migration spec")
    which.add_argument("--fleet", type=Path, metavar="FILE", help="a fleet file: every "
                       "cluster's plan (each with its own kubeconfig context), one table")
    add_kube_flags(plan)
    plan.add_argument("--helm", default="helm", metavar="PATH",
                      help="helm binary that renders the chart with the values (default: helm "
                      "on PATH)")
    plan.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="table")
    plan.set_defaults(run=_plan)

    schema = groups.add_parser("schema", help="print the spec's JSON Schema (for editors)")
    schema.add_argument("--markdown", action="store_true",
                        help="a field reference table instead (as in the README)")
    schema.set_defaults(run=_schema)


def add_kube_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                        "~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the spec's "
                        "cluster.kubeconfigContext, else the current context)")


def read_spec(path: Path) -> MigrationSpec:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CommandError(f"cannot read spec {path}: {error.strerror}",
                           exit_codes.INVALID_INPUT) from error
    try:
        return load_spec(text, source=str(path))
    except SpecError as error:
        raise CommandError(str(error), exit_codes.INVALID_INPUT) from error


def kube_for(spec: MigrationSpec, kubeconfig: str | None, context: str | None) -> Kube:
    """The cluster's client, from the same factory the worker's activities use; the flags
    override the spec (a --kubeconfig wins over `inCluster`)."""
    ref = cluster_ref(spec.cluster)
    ref = ref.model_copy(update={"context": context or ref.context,
                                 "in_cluster": ref.in_cluster and not kubeconfig})
    try:
        return ActivityContext(default_kubeconfig=kubeconfig).kube(ref)
    except Exception as error:  # noqa: BLE001 - the client raises many kinds; all mean "no"
        raise CommandError(f"cannot load cluster credentials: {error}",
                           exit_codes.INVALID_INPUT) from error


def read_fleet(path: Path) -> Fleet:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise CommandError(f"cannot read fleet file {path}: {error.strerror}",
                           exit_codes.INVALID_INPUT) from error
    try:
        return load_fleet(text, source=str(path))
    except SpecError as error:
        raise CommandError(str(error), exit_codes.INVALID_INPUT) from error


def _plan(args: argparse.Namespace) -> int:
    if args.fleet:
        if args.context:
            raise CommandError("--context names one cluster's context; a fleet file gives each "
                               "cluster its own (clusters[].context)")
        fleet = plan_fleet(read_fleet(args.fleet),
                           lambda spec: plan_cluster(spec, args.kubeconfig, None, args.helm))
        print(dump(fleet, args.output) if args.output != "table" else render_fleet_plan(fleet))
        return fleet.exit_code
    spec = read_spec(args.filename)
    plan = plan_cluster(spec, args.kubeconfig, args.context, args.helm)
    print(dump(plan, args.output) if args.output != "table" else render_plan(plan))
    return exit_codes.OK if plan.can_run else exit_codes.BLOCKED


def plan_cluster(spec: MigrationSpec, kubeconfig: str | None, context: str | None,
                 helm: str) -> MigrationPlan:
    """Discovery, the chart's verdict and the plan for one cluster; CommandError when the
    cluster cannot be read."""
    kube = kube_for(spec, kubeconfig, context)
    try:
        facts = discover_cluster(kube)
    except DiscoveryError as error:
        raise CommandError(f"discovery: {error}", exit_codes.BLOCKED) from error
    except Exception as error:  # noqa: BLE001 - connection refused, TLS, 401/403...
        raise CommandError(f"cannot read cluster {spec.cluster.name}: {_short(error)}",
                           exit_codes.UNREACHABLE) from error
    return make_plan(spec, facts, _render(helm, spec, facts))


def _render(helm: str, spec: MigrationSpec, facts: ClusterFacts) -> ChartVerdict:
    """The chart's verdict on the values, as the migration will ask for it; a chart that cannot
    be fetched or rendered here is a warning in the plan, not the end of it."""
    try:
        return render_chart(helm, render_input(spec, facts))
    except ApplicationError as error:
        return ChartNotRendered(reason=error.message)


def _schema(args: argparse.Namespace) -> int:
    print(spec_reference() if args.markdown else json.dumps(spec_json_schema(), indent=2))
    return exit_codes.OK


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def render_plan(plan: MigrationPlan) -> str:
    facts = plan.facts
    out = [f"Cluster {plan.cluster}: {facts.nodes} nodes ({facts.control_planes} control plane), "
           f"zones {', '.join(facts.zones) or '-'}",
           f"  flannel      {facts.flannel or 'not found'}",
           f"  services     {', '.join(facts.service_cidrs) or '-'}",
           f"  kube-proxy   {'present' if facts.kube_proxy else 'absent'}",
           f"  API server   for agents: {facts.api_server_for_agents}",
           *(f"               not used: {note}" for note in facts.api_endpoint_notes),
           f"  policies     {facts.network_policies} NetworkPolicies",
           f"  PDBs at 0    {', '.join(facts.pdbs_blocking_now) or 'none'}"]
    if facts.other_cnis:
        out.append(f"  other CNIs   {', '.join(facts.other_cnis)}")
    if plan.rendered_chart:
        chart = plan.rendered_chart
        out.append(f"  chart        {chart.name} {chart.version} {chart.digest}, rendered with "
                   "the values")
    out.append("")
    if plan.findings:
        out.append(table([[f.severity + (" (acknowledged)" if f.acknowledged else ""), f.id,
                           f.message, f.remedy] for f in plan.findings],
                          ["severity", "finding", "message", "remedy"]))
    else:
        out.append("Preflight: no findings.")
    out.append("")
    out.append(table([[str(w.index), w.kind, w.zone or "-", ", ".join(w.nodes)]
                      for w in plan.waves], ["wave", "kind", "zone", "nodes"]))
    if plan.excluded_nodes:
        out.append(f"excluded: {', '.join(plan.excluded_nodes)}")
    out.append("")
    out.append("Helm values, initial -> final:")
    out.append(table([[key, json.dumps(old), json.dumps(new)] for key, old, new in
                      plan.values_diff], ["key", "initial", "final"]))
    out.append("")
    if not plan.can_run:
        out.append("BLOCKED: fix the blocking findings above before starting.")
    elif plan.warnings_to_acknowledge:
        out.append("Can run once these warnings are acknowledged (spec `acknowledge:` or the "
                   f"preflight approval): {', '.join(plan.warnings_to_acknowledge)}")
    else:
        out.append("Ready: `cilium-migrate start -f SPEC` runs this plan.")
    return "\n".join(out)
