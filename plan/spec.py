"""MigrationSpec: what the operator asks for, as written in the spec file.

Every default is the value the procedure (and the article it follows) uses, so a spec that only
names the cluster describes the documented migration. Unknown keys are errors everywhere: a
misspelt option must never be silently ignored in a tool that reboots nodes.

YAML keys are camelCase; Python code uses the snake_case attribute names. `spec_loader` parses YAML
with aliases only, so a snake_case key in a spec file is reported as unknown.
"""

from __future__ import annotations

import ipaddress
import math
import re
import string
from collections import Counter
from datetime import timedelta
from typing import Annotated, Any, Literal

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
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from plan.duration import Duration

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
_PERCENT = re.compile(r"^([1-9][0-9]?|100)%$")
_VERSION = r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$"

DEFAULT_CILIUM_VERSION = "1.18.4"
DEFAULT_CHART_REPO = "https://helm.cilium.io"
DEFAULT_POD_CIDR = "10.245.0.0/16"
DEFAULT_TUNNEL_PORT = 8473
# The probe and node-shell image, pinned so every node runs the same tools. The probe script
# (activities.verify) needs busybox's wget to finish a TLS handshake with the API server: 1.36's
# fails against Go's TLS servers ("TLS error from peer (alert code 40): handshake failure"),
# 1.37.0 succeeds. 1.37's wget still exits 1 on a 401 ("server returned error: HTTP/1.1 401
# Unauthorized"), which the script reads as an answer. nsenter, for node-shell, is in it too.
DEFAULT_IMAGE = "busybox:1.37.0"
# The echo mesh's server, pinned: Kubernetes' own e2e networking tests make one pod test another
# with this image's `netexec` and its /dial endpoint.
DEFAULT_ECHO_IMAGE = "registry.k8s.io/e2e-test-images/agnhost:2.59"
DEFAULT_ECHO_NAMESPACE = "cilium-migrate-echo"
# Namespaces that hold other things: the echo mesh's namespace is deleted when it is removed.
SHARED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
VerifyCheck = Literal["pod-ip-in-pool", "api-server", "dns", "peer-flannel", "peer-cilium"]
VERIFY_CHECKS: tuple[VerifyCheck, ...] = (
    "pod-ip-in-pool",
    "api-server",
    "dns",
    "peer-flannel",
    "peer-cilium",
)
# Placeholders a reboot command template may use; anything else is a typo caught at load time.
REBOOT_PLACEHOLDERS = frozenset({"node", "ip"})


class SpecModel(BaseModel):
    """Base of every spec section: strict about keys, camelCase outside, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


def _dns_label(value: str) -> str:
    if not re.fullmatch(_DNS_LABEL, value):
        raise ValueError(
            "expected a DNS label: lowercase letters, digits and '-', at most 63 characters"
        )
    return value


def _host(value: str) -> str:
    """A host name (RFC 1123) or an IP address, as KUBERNETES_SERVICE_HOST takes it."""
    example = 'e.g. "192.0.2.10" or "api.example.internal"'
    if "://" in value or "/" in value:
        raise ValueError(f"expected a host name or IP address, not a URL ({example})")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if value.startswith("[") or value.count(":") == 1:
        raise ValueError(f"expected a host name or IP address without brackets or port "
                         f"({example}); the port goes in k8sServicePort")
    labels = value.split(".")
    if (len(value) > 253 or not all(_HOST_LABEL.match(label) for label in labels)
            or all(label.isdigit() for label in labels)):
        raise ValueError(f"expected a host name or IP address ({example})")
    return value


def _version(value: str) -> str:
    if not re.fullmatch(_VERSION, value):
        raise ValueError('expected a chart version such as "1.18.4" (no leading "v")')
    return value


def _json_like(value: dict[str, Any]) -> dict[str, Any]:
    """Helm values must be plain JSON data; anything else would fail far from its cause."""
    pending: list[tuple[str, object, int]] = [("", value, 0)]
    seen = 0
    while pending:
        path, item, depth = pending.pop()
        seen += 1
        if depth > 32 or seen > 20_000:
            raise ValueError("too deeply nested or too large for Helm values")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"key {key!r} under '{path or '.'}' must be a string")
                pending.append((f"{path}.{key}" if path else key, child, depth + 1))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                pending.append((f"{path}[{index}]", child, depth + 1))
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"'{path}' is {item}, which JSON and Helm cannot carry")
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            raise ValueError(f"'{path}' has a {type(item).__name__}; use strings, numbers, lists")
    return value


DnsLabel = Annotated[
    str,
    AfterValidator(_dns_label),
    WithJsonSchema({"type": "string", "pattern": _DNS_LABEL}),
]
NodeName = Annotated[str, StringConstraints(min_length=1, max_length=253)]
Image = Annotated[str, StringConstraints(pattern=r"^\S+$", max_length=512)]


def _ipv4_network(value: object) -> ipaddress.IPv4Network:
    if isinstance(value, ipaddress.IPv4Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 CIDR such as {DEFAULT_POD_CIDR} as a string")
    try:
        return ipaddress.IPv4Network(value.strip(), strict=True)
    except ValueError as error:
        # ipaddress explains host bits and bad octets well; keep its reason.
        raise ValueError(f"expected an IPv4 CIDR such as {DEFAULT_POD_CIDR}: {error}") from None


IPv4Cidr = Annotated[
    ipaddress.IPv4Network,
    PlainValidator(_ipv4_network),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": "IPv4 CIDR, e.g. 10.245.0.0/16"}),
]


def _max_unavailable(value: object) -> int | str:
    # One validator for "count or percentage" so an error reads as one message, not a union dump.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and _PERCENT.match(value.strip()):
        return value.strip()
    raise ValueError('expected a whole number >= 1 or a percentage from "1%" to "100%"')


MaxUnavailable = Annotated[
    int | str,
    PlainValidator(_max_unavailable),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": _PERCENT.pattern},
            ]
        }
    ),
]


def _unique(values: list[str], what: str) -> list[str]:
    twice = sorted(value for value, count in Counter(values).items() if count > 1)
    if twice:
        raise ValueError(f"{what} listed more than once: {', '.join(twice)}")
    return values


class ClusterSpec(SpecModel):
    name: DnsLabel = Field(description="Cluster name: workflow ID and Cilium cluster.name.")
    kubeconfig_context: str | None = Field(default=None, min_length=1)
    in_cluster: StrictBool = False
    task_queue: str | None = Field(
        default=None, min_length=1, max_length=1000, pattern=r"^\S+$",
        description="Task queue of a worker that holds this cluster's credentials (the "
        "worker chart's is cilium-migrate.<clusterName>): the cluster's steps run there, the "
        "workflows where the migration was started. Default: the migration's own queue.")

    @field_validator("in_cluster")
    @classmethod
    def _one_credential_source(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("kubeconfig_context"):
            raise ValueError("inCluster and kubeconfigContext are mutually exclusive; keep one")
        return value


class ChartSource(SpecModel):
    """A chart from a Helm repository (repo + name) or from a local directory (path)."""

    repo: str | None = Field(default=None, description=f"Default {DEFAULT_CHART_REPO}.")
    name: str = Field(default="cilium", min_length=1)
    path: str | None = Field(default=None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _default_repo(cls, data: Any) -> Any:
        # Without a path the chart comes from Cilium's repository: fill it in so `repo` is
        # always the URL to use. With a path, repo stays None (and a JSON copy round-trips).
        if isinstance(data, dict) and data.get("path") is None and data.get("repo") is None:
            return {**data, "repo": DEFAULT_CHART_REPO}
        return data

    @field_validator("repo")
    @classmethod
    def _repo_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme, _, rest = value.partition("://")
        if scheme not in ("http", "https", "oci") or not rest.strip("/") or " " in value:
            raise ValueError("expected an http(s):// or oci:// URL of a Helm repository")
        return value

    @model_validator(mode="after")
    def _repo_or_path(self) -> ChartSource:
        # name is harmless beside path (ignored), and a JSON round trip always carries it.
        if self.path is not None and self.repo is not None:
            raise ValueError("give either repo (and name) or path, not both")
        return self


ApiHost = Annotated[
    str,
    AfterValidator(_host),
    WithJsonSchema({"type": "string", "description": "host name or IP address"}),
]


class CiliumSpec(SpecModel):
    version: Annotated[
        str, AfterValidator(_version), WithJsonSchema({"type": "string", "pattern": _VERSION})
    ] = DEFAULT_CILIUM_VERSION
    chart: ChartSource = Field(default_factory=ChartSource)
    namespace: DnsLabel = "kube-system"
    extra_values: Annotated[dict[str, Any], AfterValidator(_json_like)] = Field(
        default_factory=dict,
        description="Helm values merged over the rendered ones (Helm semantics: null deletes).",
    )
    k8s_service_host: ApiHost | None = Field(
        default=None,
        alias="k8sServiceHost",
        description="Where the agents reach the API server from the nodes (Helm "
                    "k8sServiceHost); with k8sServicePort. Default: the address kubeadm's "
                    "kube-proxy or cluster-info ConfigMap publishes, else unset (the "
                    "kubernetes Service through kube-proxy). Never the kubeconfig's URL.",
    )
    k8s_service_port: StrictInt | None = Field(
        default=None, ge=1, le=65535, alias="k8sServicePort",
        description="The API server port for k8sServiceHost (Helm k8sServicePort).",
    )

    @model_validator(mode="after")
    def _host_and_port_together(self) -> CiliumSpec:
        if (self.k8s_service_host is None) != (self.k8s_service_port is None):
            raise ValueError("give k8sServiceHost and k8sServicePort together, or neither")
        return self

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        major, minor, patch = self.version.split("-", 1)[0].split(".")
        return int(major), int(minor), int(patch)


class NetworkSpec(SpecModel):
    pod_cidrs: list[IPv4Cidr] = Field(
        default_factory=lambda: [ipaddress.IPv4Network(DEFAULT_POD_CIDR)],
        alias="podCIDRs",
        min_length=1,
        max_length=16,
    )
    tunnel_protocol: Literal["vxlan", "geneve"] = "vxlan"
    tunnel_port: StrictInt = Field(default=DEFAULT_TUNNEL_PORT, ge=1, le=65535)

    @field_validator("pod_cidrs")
    @classmethod
    def _disjoint(cls, value: list[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
        for position, first in enumerate(value):
            for second in value[position + 1 :]:
                if first.overlaps(second):
                    raise ValueError(f"{first} and {second} overlap; pod CIDRs must be disjoint")
        return value


class RolloutSpec(SpecModel):
    canary_size: StrictInt = Field(default=1, ge=1, le=10_000)
    max_unavailable: MaxUnavailable = 1
    one_zone_at_a_time: StrictBool = False
    first_nodes: list[NodeName] = Field(default_factory=list)
    last_nodes: list[NodeName] = Field(default_factory=list)
    exclude_nodes: list[NodeName] = Field(default_factory=list)

    @field_validator("first_nodes", "last_nodes", "exclude_nodes")
    @classmethod
    def _no_repeats(cls, value: list[str], info: ValidationInfo) -> list[str]:
        _unique(value, "node")
        # Fields validate in declaration order, so the earlier lists are already in info.data.
        earlier = {"last_nodes": ["first_nodes"], "exclude_nodes": ["first_nodes", "last_nodes"]}
        for other in earlier.get(info.field_name or "", []):
            both = sorted(set(value) & set(info.data.get(other, [])))
            if both:
                raise ValueError(f"{', '.join(both)} also listed in {to_camel(other)}")
        return value


class ApprovalSpec(SpecModel):
    policy: Literal["none", "per-phase", "per-wave", "per-node"] = "per-phase"
    approvers: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Who may approve; empty means anyone."
    )
    allow_pre_approval: StrictBool = False


class DrainSpec(SpecModel):
    """Defaults are `kubectl drain --ignore-daemonsets`'s: pods with emptyDir data and pods no
    controller owns are refused (the drain stops there and waits for the operator) unless
    the spec allows them; `cilium-migrate plan` names them beforehand."""

    timeout: Duration = timedelta(minutes=15)
    grace_period_seconds: StrictInt | None = Field(default=None, ge=0, le=86_400)
    delete_empty_dir_data: StrictBool = Field(
        default=False,
        description="Evict pods with emptyDir volumes (their data is lost), as `kubectl drain "
                    "--delete-emptydir-data` does; false makes them blockers.")
    evict_unmanaged_pods: StrictBool = Field(
        default=False,
        description="Evict pods no controller owns (nothing re-creates them), as `kubectl "
                    "drain --force` does; false makes them blockers.")
    on_timeout: Literal["fail", "force"] = "fail"


class RebootSpec(SpecModel):
    strategy: Literal["node-shell", "docker", "command"] = "node-shell"
    image: Image = DEFAULT_IMAGE
    command: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        validate_default=True,
        description='Command template for strategy "command"; placeholders {node} and {ip}.',
    )
    timeout: Duration = timedelta(minutes=10)

    @field_validator("command", mode="after")
    @classmethod
    def _command_matches_strategy(
        cls, value: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        strategy = info.data.get("strategy")
        if strategy is None:
            return value  # the strategy itself was invalid and is reported on its own
        if strategy != "command":
            if value is not None:
                raise ValueError(f'only used with strategy "command", not "{strategy}"')
            return value
        if value is None:
            raise ValueError('required when strategy is "command", e.g. ["ssh", "{node}", ...]')
        used = _placeholders(value)
        unknown = sorted(used - REBOOT_PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; known: {{node}}, {{ip}}")
        if "node" not in used and "ip" not in used:
            raise ValueError("the template never names the node: use {node} or {ip}")
        return value


def render_command(template: list[str], node: str, ip: str | None) -> list[str]:
    """A reboot command template for one node; ValueError if it needs an IP the node lacks."""
    if ip is None and "ip" in _placeholders(template):
        raise ValueError(f"node {node} has no internal IP for the {{ip}} placeholder")
    return [part.format(node=node, ip=ip or "") for part in template]


def _placeholders(template: list[str]) -> set[str]:
    found: set[str] = set()
    for part in template:
        try:
            parsed = list(string.Formatter().parse(part))
        except ValueError as error:  # unbalanced braces
            raise ValueError(f"bad template {part!r}: {error}") from None
        found |= {field for _, field, _, _ in parsed if field is not None}
    return found


class VerifySpec(SpecModel):
    probe_image: Image = Field(
        default=DEFAULT_IMAGE,
        description="Needs busybox's sh, wget (1.37 or later), nslookup, sed, awk, tr, cut, "
                    "tail.")
    checks: list[VerifyCheck] = Field(default_factory=lambda: list(VERIFY_CHECKS), min_length=1)
    timeout: Duration = timedelta(minutes=2)

    @field_validator("checks")
    @classmethod
    def _no_repeated_checks(cls, value: list[str]) -> list[str]:
        return _unique(value, "check")


class ConnectivitySpec(SpecModel):
    """The echo mesh (an agnhost `netexec` DaemonSet on every node the run migrates, deployed
    before the first node moves and removed at finalize or abort), which verify's peer checks
    call, and the monitor that makes echo pods call each other across nodes and overlays while
    the nodes move, halting new waves when more than `maxFailedRequests` fail within `window`."""

    enabled: StrictBool = Field(
        default=True, description="false: no echo mesh, no monitor; verify's peer checks are "
                                  "then reported not checked.")
    namespace: DnsLabel = Field(
        default=DEFAULT_ECHO_NAMESPACE,
        description="The echo mesh's own namespace; created, and deleted at the end.")
    echo_image: Image = Field(default=DEFAULT_ECHO_IMAGE,
                              description="Must serve agnhost netexec's /hostname and /dial.")
    max_failed_requests: StrictInt = Field(default=0, ge=0, le=1_000_000)
    window: Duration = timedelta(seconds=60)
    interval: Duration = Field(default=timedelta(seconds=5),
                               description="Time between two rounds of requests.")
    sample_pairs: StrictInt = Field(
        default=16, ge=1, le=500,
        description="Requests per round, spread over nodes and pair kinds, whatever the size "
                    "of the cluster.")

    @field_validator("namespace")
    @classmethod
    def _own_namespace(cls, value: str) -> str:
        if value in SHARED_NAMESPACES:
            raise ValueError(f"{value} holds other objects, and the echo mesh's namespace is "
                             f"deleted when the mesh is removed: use a namespace of its own, "
                             f"e.g. {DEFAULT_ECHO_NAMESPACE}")
        return value

    @model_validator(mode="after")
    def _interval_inside_window(self) -> ConnectivitySpec:
        if not timedelta(seconds=1) <= self.interval <= self.window:
            raise ValueError("interval must be at least 1s and no longer than window "
                             f"(interval {self.interval}, window {self.window})")
        if self.window > timedelta(hours=1):
            raise ValueError(f"window must be at most 1h (got {self.window})")
        return self


class FinalizeSpec(SpecModel):
    host_legacy_routing: StrictBool = Field(
        default=False, description="bpf.hostLegacyRouting after the migration."
    )
    remove_flannel: StrictBool = True


class MigrationSpec(SpecModel):
    """The whole spec file. Only cluster.name is required."""

    cluster: ClusterSpec
    cilium: CiliumSpec = Field(default_factory=CiliumSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    approvals: ApprovalSpec = Field(default_factory=ApprovalSpec)
    drain: DrainSpec = Field(default_factory=DrainSpec)
    reboot: RebootSpec = Field(default_factory=RebootSpec)
    verify: VerifySpec = Field(default_factory=VerifySpec)
    connectivity: ConnectivitySpec = Field(default_factory=ConnectivitySpec)
    finalize: FinalizeSpec = Field(default_factory=FinalizeSpec)
    acknowledge: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="IDs of warning findings the operator accepts."
    )

    @model_validator(mode="after")
    def _echo_mesh_apart_from_cilium(self) -> MigrationSpec:
        if self.connectivity.enabled and self.connectivity.namespace == self.cilium.namespace:
            raise ValueError(
                f"connectivity.namespace {self.connectivity.namespace} is Cilium's namespace, "
                "and the echo mesh's namespace is deleted when the mesh is removed: use a "
                f"namespace of its own, e.g. {DEFAULT_ECHO_NAMESPACE}")
        return self
