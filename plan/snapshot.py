"""ClusterSnapshot: the shape of a cluster a rehearsal rebuilds, as a versioned file.

A snapshot holds what decides how a migration goes on a cluster and nothing that would make the
file sensitive to hand around (it is meant to be attached to a change request): node names,
labels, taints, zones and sizes; namespaces; the workloads' scheduling shape (replicas,
selectors, tolerations, affinity, spread, grace periods, resource requests); PDBs and
PriorityClasses; flannel's settings. Container images, commands, environment, volumes and
annotations are left out on purpose: annotations carry `last-applied-configuration` copies of
whole objects, env values and volumes can name or hold credentials, and none of them changes
where a pod may run or whether a drain may evict it.

Pure data: `activities.snapshot` reads a cluster into it, `sandbox.replica` builds from it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plan.facts import FlannelFacts, Taint
from plan.spec_loader import SpecError, SpecProblem, validation_problems

SNAPSHOT_VERSION: Literal[1] = 1
WHAT = "cluster snapshot"
# Far above a snapshot of thousands of nodes (about 2 kB each) and workloads.
MAX_SNAPSHOT_CHARS = 200_000_000

WorkloadKind = Literal["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"]


class SnapshotModel(BaseModel):
    # Unknown keys are refused: a hand-edited file with a typo must not silently lose a field.
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeShape(SnapshotModel):
    name: str = Field(min_length=1)
    control_plane: bool = False
    zone: str | None = None
    schedulable: bool = True  # false when the node was cordoned
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    capacity: dict[str, str] = Field(default_factory=dict)  # cpu, memory, pods, ...
    allocatable: dict[str, str] = Field(default_factory=dict)


class ContainerShape(SnapshotModel):
    name: str
    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class PodShape(SnapshotModel):
    """What of a pod template decides where its pods run and how long they take to stop."""

    labels: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    topology_spread_constraints: list[dict[str, Any]] = Field(default_factory=list)
    termination_grace_period_seconds: int | None = Field(default=None, ge=0)
    priority_class_name: str | None = None
    host_network: bool = False
    containers: list[ContainerShape] = Field(default_factory=list)
    init_containers: list[ContainerShape] = Field(default_factory=list)


class WorkloadShape(SnapshotModel):
    kind: WorkloadKind
    namespace: str
    name: str
    replicas: int | None = Field(default=None, ge=0)  # None for DaemonSets
    selector: dict[str, Any] = Field(default_factory=dict)  # a label selector
    # StatefulSets: OrderedReady (one pod at a time) or Parallel, which decides how fast an
    # evicted pod is back and so how long a PDB holds the next drain.
    pod_management_policy: str | None = None
    pod: PodShape = Field(default_factory=PodShape)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


class PodDisruptionBudgetShape(SnapshotModel):
    namespace: str
    name: str
    selector: dict[str, Any] = Field(default_factory=dict)
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    unhealthy_pod_eviction_policy: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class PriorityClassShape(SnapshotModel):
    name: str
    value: int
    global_default: bool = False
    preemption_policy: str | None = None


class NamespaceShape(SnapshotModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class ClusterSnapshot(SnapshotModel):
    version: Literal[1] = SNAPSHOT_VERSION
    cluster: str  # the spec's cluster name, for the reader of the file
    taken_at: datetime
    server_version: str | None = None
    nodes: list[NodeShape] = Field(default_factory=list)
    namespaces: list[NamespaceShape] = Field(default_factory=list)
    workloads: list[WorkloadShape] = Field(default_factory=list)
    pdbs: list[PodDisruptionBudgetShape] = Field(default_factory=list)
    priority_classes: list[PriorityClassShape] = Field(default_factory=list)
    flannel: FlannelFacts | None = None


def dump_snapshot(snapshot: ClusterSnapshot, file_format: Literal["yaml", "json"]) -> str:
    data = json.loads(snapshot.model_dump_json())
    if file_format == "json":
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))


def load_snapshot(text: str, source: str = "<snapshot>") -> ClusterSnapshot:
    """A snapshot from YAML or JSON text; SpecError (saying where and what) for anything else."""

    def refuse(message: str, path: str = "") -> SpecError:
        return SpecError(source, [SpecProblem(path=path, line=None, message=message)], WHAT)

    if len(text) > MAX_SNAPSHOT_CHARS:
        raise refuse(f"the file is larger than {MAX_SNAPSHOT_CHARS} characters")
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise refuse(f"neither YAML nor JSON ({first})") from None
    if not isinstance(data, dict):
        raise refuse("the file is empty" if data is None else
                     f"the top level must be a mapping, not a {type(data).__name__}")
    version = data.get("version")
    if version != SNAPSHOT_VERSION:
        raise refuse(f"version {version!r} is not one this cilium-migrate reads (it reads "
                     f"{SNAPSHOT_VERSION}); take the snapshot again with this version",
                     "version")
    try:
        return ClusterSnapshot.model_validate(data)
    except ValidationError as error:
        raise SpecError(source, validation_problems(error, data, {}, ClusterSnapshot),
                        WHAT) from None
