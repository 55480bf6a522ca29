"""A fleet: many clusters migrated in stages, read from one file.

The file gives defaults shared by every cluster (any MigrationSpec section), the clusters with
their own overrides, and the stages: which clusters (by name or by label), how many migrate at
once, how long the stage soaks before the next one starts, and whether it waits for an
approval. `load_fleet` turns it into a `Fleet`: each cluster's full MigrationSpec (validated
exactly as a spec file is) and the stages resolved to cluster names. Every problem names the
line it is on, and all problems are reported at once, as for a spec file.

```yaml
name: rollout-2026
approvals: {approvers: [alice, bob]}
defaults: {approvals: {policy: per-wave}}
clusters:
  - {name: dev, context: dev, labels: {env: dev}}
  - {name: prod-eu, taskQueue: cilium-migrate.prod-eu, labels: {env: prod},
     overrides: {rollout: {maxUnavailable: 3}}}
stages:
  - {name: dev, clusters: [dev], soak: 1d}
  - {name: prod, selector: {env: prod}, concurrency: 2, approval: true}
```
"""

from __future__ import annotations

import copy
import difflib
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from plan.duration import format_duration, parse_duration
from plan.spec import ApprovalSpec, DnsLabel, MigrationSpec, SpecModel
from plan.spec_loader import (
    SpecError,
    SpecProblem,
    YamlPath,
    problem_at,
    read_yaml,
    validation_problems,
)

# GKE's rollout sequencing allows soak times of up to 30 days; so do we.
MAX_SOAK = timedelta(days=30)
WHAT = "fleet file"


def _soak(value: object) -> timedelta:
    return parse_duration(value, maximum=MAX_SOAK)


Soak = Annotated[
    timedelta,
    PlainValidator(_soak),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "description": 'Soak time: "30m", "1d", at most 30d.'}),
]
Labels = dict[Annotated[str, StringConstraints(min_length=1, max_length=316)],
              Annotated[str, StringConstraints(max_length=63)]]


def _no_cluster_name(defaults: dict[str, Any]) -> dict[str, Any]:
    cluster = defaults.get("cluster")
    if isinstance(cluster, dict) and "name" in cluster:
        raise ValueError("cluster.name cannot be a default: each cluster names itself")
    return defaults


class FleetCluster(SpecModel):
    name: DnsLabel
    context: str | None = Field(default=None, min_length=1,
                                description="kubeconfig context (cluster.kubeconfigContext).")
    task_queue: str | None = Field(default=None, min_length=1, description="cluster."
                                   "taskQueue: the queue of the worker holding its credentials.")
    labels: Labels = Field(default_factory=dict, description="For stage selectors.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="MigrationSpec sections for this cluster only; "
        "merged over the defaults key by key (lists replace).")


class StageSpec(SpecModel):
    name: DnsLabel | None = None
    clusters: list[DnsLabel] = Field(default_factory=list)
    selector: Labels = Field(default_factory=dict,
                             description="Every cluster whose labels include all of these.")
    concurrency: StrictInt = Field(default=1, ge=1, le=1000,
                                   description="Clusters migrating at once.")
    soak: Soak | None = Field(default=None, description="Wait after the stage, before the next.")
    approval: StrictBool = Field(default=False,
                                 description="The stage waits for `approve FLEET stage-N`.")


class FleetApprovals(SpecModel):
    approvers: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Who may approve a stage; empty: anyone.")
    allow_pre_approval: StrictBool = False


class FleetFile(SpecModel):
    """The fleet file as written."""

    name: DnsLabel
    approvals: FleetApprovals = Field(default_factory=FleetApprovals)
    defaults: Annotated[dict[str, Any], AfterValidator(_no_cluster_name)] = Field(
        default_factory=dict)
    clusters: list[FleetCluster] = Field(min_length=1)
    stages: list[StageSpec] = Field(min_length=1)


class FleetStage(BaseModel):
    """A stage resolved to its clusters, in the order they start."""

    model_config = ConfigDict(frozen=True)

    index: int  # 1-based: the gate is `stage-<index>`
    name: str
    clusters: list[str]
    concurrency: int
    soak_seconds: float = 0.0
    approval: bool = False

    @property
    def gate(self) -> str:
        return stage_gate(self.index)


class Fleet(BaseModel):
    """What the fleet workflow runs: every cluster's spec and the stages in order."""

    model_config = ConfigDict(frozen=True)

    name: str
    approvals: ApprovalSpec  # who may approve the stage gates (its policy is not used)
    stages: list[FleetStage]
    clusters: list[MigrationSpec]

    def spec_of(self, cluster: str) -> MigrationSpec:
        return next(spec for spec in self.clusters if spec.cluster.name == cluster)

    def stage_of(self, cluster: str) -> FleetStage:
        return next(stage for stage in self.stages if cluster in stage.clusters)


def stage_gate(index: int) -> str:
    return f"stage-{index}"


def load_fleet(text: str, source: str = "<fleet>") -> Fleet:
    """Parse, validate and resolve a fleet file; raise SpecError (and nothing else)."""
    if not isinstance(text, str):
        raise SpecError(source, [SpecProblem(path="", line=None, message="expected YAML text")],
                        WHAT)
    try:
        data, lines = read_yaml(text, source)
    except SpecError as error:
        raise SpecError(source, error.problems, WHAT) from None
    if not isinstance(data, dict):
        message = ("the fleet file is empty" if data is None
                   else f"the top level must be a mapping, not a {type(data).__name__}")
        raise SpecError(source, [SpecProblem(path="", line=1, message=message)], WHAT)
    try:
        written = FleetFile.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as error:
        raise SpecError(source, validation_problems(error, data, lines, FleetFile),
                        WHAT) from None
    problems: list[SpecProblem] = []
    specs = _cluster_specs(written, data, lines, problems)
    stages = _stages(written, lines, problems)
    if problems:
        raise SpecError(source, sorted(problems, key=lambda p: p.line or 0), WHAT)
    return Fleet(name=written.name, stages=stages, clusters=specs,
                 approvals=ApprovalSpec(approvers=written.approvals.approvers,
                                        allow_pre_approval=written.approvals.allow_pre_approval))


# --- clusters -------------------------------------------------------------------------------


def _cluster_specs(fleet: FleetFile, data: dict[str, Any], lines: dict[YamlPath, int],
                   problems: list[SpecProblem]) -> list[MigrationSpec]:
    specs = []
    seen: dict[str, int] = {}
    found: dict[SpecProblem, list[str]] = {}  # each problem, and the clusters it concerns
    for index, cluster in enumerate(fleet.clusters):
        where: YamlPath = ("clusters", index)
        if cluster.name in seen:
            problems.append(problem_at(lines, (*where, "name"), f"cluster {cluster.name} is listed "
                                f"twice (also clusters[{seen[cluster.name]}])"))
            continue
        seen[cluster.name] = index
        merged = _merge(fleet.defaults, cluster.overrides)
        section = dict(merged.get("cluster") or {})
        section["name"] = cluster.name
        if cluster.context:
            section["kubeconfigContext"] = cluster.context
        if cluster.task_queue:
            section["taskQueue"] = cluster.task_queue
        merged["cluster"] = section
        overrides = data["clusters"][index].get("overrides") or {}

        def locate(path: YamlPath, where: YamlPath = where,
                   overrides: dict[str, Any] = overrides) -> YamlPath:
            """A merged value's place in the file: the cluster's override, else the default."""
            if _holds(overrides, path):
                return (*where, "overrides", *path)
            if _holds(fleet.defaults, path):
                return ("defaults", *path)
            return where

        try:
            specs.append(MigrationSpec.model_validate(merged, by_alias=True, by_name=False))
        except ValidationError as error:
            for problem in validation_problems(error, merged, lines, locate=locate):
                found.setdefault(problem, []).append(cluster.name)
    # A bad default is one problem, however many clusters inherit it.
    problems += [problem.model_copy(update={"message": f"cluster{'s' * (len(names) > 1)} "
                                            f"{', '.join(names)}: {problem.message}"})
                 for problem, names in found.items()]
    return specs


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: mappings merge key by key, anything else (lists too) replaces."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _holds(data: object, path: YamlPath) -> bool:
    for part in path:
        keyed = isinstance(data, dict) and part in data
        listed = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if not (keyed or listed):
            return False
        data = data[part]  # type: ignore[index]
    return bool(path)


# --- stages ---------------------------------------------------------------------------------


def _stages(fleet: FleetFile, lines: dict[YamlPath, int],
            problems: list[SpecProblem]) -> list[FleetStage]:
    known = [cluster.name for cluster in fleet.clusters]
    placed: dict[str, int] = {}  # cluster -> the stage (1-based) it is in
    names: dict[str, int] = {}
    stages = []
    for position, stage in enumerate(fleet.stages):
        index, where = position + 1, ("stages", position)
        name = stage.name or f"stage-{index}"
        if name in names:
            problems.append(problem_at(lines, (*where, "name"), f"stage name {name} repeats stage "
                                f"{names[name]}; give each stage its own name"))
        names.setdefault(name, index)
        members = _members(stage, fleet, known, lines, where, problems)
        for cluster in list(members):
            if cluster in placed:
                problems.append(problem_at(lines, where, f"cluster {cluster} is already in stage "
                                    f"{placed[cluster]}; a cluster belongs to one stage only"))
                members.remove(cluster)
            else:
                placed[cluster] = index
        stages.append(FleetStage(
            index=index, name=name, clusters=members, concurrency=stage.concurrency,
            soak_seconds=stage.soak.total_seconds() if stage.soak else 0.0,
            approval=stage.approval))
    for position, cluster in enumerate(known):
        if cluster not in placed:
            problems.append(problem_at(lines, ("clusters", position), f"cluster {cluster} is in no "
                                "stage; name it in a stage's clusters, or give it labels a "
                                "stage's selector matches"))
    return stages


def _members(stage: StageSpec, fleet: FleetFile, known: list[str], lines: dict[YamlPath, int],
             where: YamlPath, problems: list[SpecProblem]) -> list[str]:
    if stage.clusters and stage.selector:
        problems.append(problem_at(lines, where, "a stage lists clusters or selects them by label, "
                            "not both"))
        return []
    if not stage.clusters and not stage.selector:
        problems.append(problem_at(lines, where, "empty stage: list its clusters (clusters: "
                                   "[NAME]) or select them by label (selector: {env: prod})"))
        return []
    if stage.selector:
        chosen = [c.name for c in fleet.clusters
                  if all(c.labels.get(k) == v for k, v in stage.selector.items())]
        if not chosen:
            wanted = ", ".join(f"{k}={v}" for k, v in stage.selector.items())
            present = sorted({f"{k}={v}" for c in fleet.clusters for k, v in c.labels.items()})
            problems.append(problem_at(lines, (*where, "selector"), f"selector {wanted} matches no "
                                f"cluster; labels in this fleet: {', '.join(present) or 'none'}"))
        return chosen
    members = []
    for position, name in enumerate(stage.clusters):
        if name in known:
            if name not in members:
                members.append(name)
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the fleet's clusters: {', '.join(known)}"
        problems.append(problem_at(lines, (*where, "clusters", position),
                            f"unknown cluster {name!r}; {hint}"))
    return members


