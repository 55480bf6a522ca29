"""The worker's Helm chart in tests: rendering it, installing it into a sandbox, and acting as
its ServiceAccount (a token from the TokenRequest API in a kubeconfig of its own)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandbox.audit import audit_log
from sandbox.controlplane import write_kubeconfig_file
from sandbox.toolchain import Toolchain
from tests.conftest import REPO

CHART = REPO / "deploy" / "cilium-migrate-worker"
RELEASE = "cilium-migrate-worker"  # names the ServiceAccount and the roles too
NAMESPACE = "cilium-migrate"
SERVICE_ACCOUNT = RELEASE
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
REQUIRED = {"clusterName": "sandbox", "temporal": {"address": "temporal-frontend.temporal:7233"}}


def run(toolchain: Toolchain, tool: str, *args: str, kubeconfig: Path | None = None,
        check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    flags = ["--kubeconfig", str(kubeconfig)] if kubeconfig else []
    result = subprocess.run([str(toolchain[tool]), *flags, *args], input=stdin,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed: {result.stderr}")
    return result


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            out[key] = (merged(out[key], value) if isinstance(value, dict)
                        and isinstance(out.get(key), dict) else value)
    return out


def values_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / "worker-values.json"
    path.write_text(json.dumps(merged(REQUIRED, values)))
    return path


def render(toolchain: Toolchain, directory: Path, values: dict[str, Any], check: bool = True,
           namespace: str = NAMESPACE) -> subprocess.CompletedProcess[str]:
    return run(toolchain, "helm", "template", RELEASE, str(CHART), "--namespace", namespace,
               "--values", str(values_file(directory, values)), check=check)


def objects(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def install(toolchain: Toolchain, kubeconfig: Path, directory: Path,
            values: dict[str, Any]) -> None:
    """`helm upgrade --install` of the chart as an administrator would: RBAC and a Deployment
    of no replicas (the test's worker runs in the test process, with the account's token)."""
    run(toolchain, "helm", "upgrade", "--install", RELEASE, str(CHART), "--namespace",
        NAMESPACE, "--create-namespace", "--values",
        str(values_file(directory, merged({"replicas": 0}, values))), "--wait",
        kubeconfig=kubeconfig)


def service_account_kubeconfig(toolchain: Toolchain, admin: Path, path: Path,
                               hours: int = 2) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount: a bound token from the
    TokenRequest API (`kubectl create token`), the admin kubeconfig's server and CA."""
    token = run(toolchain, "kubectl", "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE,
                f"--duration={hours}h", kubeconfig=admin).stdout.strip()
    config = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]
    return write_kubeconfig_file(path, cluster["name"], cluster["cluster"], USER,
                                 {"token": token})


def can_i(toolchain: Toolchain, kubeconfig: Path, verb: str, resource: str,
          namespace: str | None = None, subresource: str | None = None) -> bool:
    """`kubectl auth can-i` with the kubeconfig's own credentials (a SelfSubjectAccessReview).
    ``resource`` may name one object (`namespaces/kube-system`)."""
    where = ["-n", namespace] if namespace else []
    if subresource:
        where.append(f"--subresource={subresource}")
    result = run(toolchain, "kubectl", "auth", "can-i", verb, resource, *where,
                 kubeconfig=kubeconfig, check=False)
    if result.stdout.strip() not in ("yes", "no"):
        raise AssertionError(f"kubectl auth can-i {verb} {resource}: {result.stderr}")
    return result.stdout.strip() == "yes"


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # with its subresource: "pods/eviction"; a path for non-resource URLs
    namespace: str | None
    code: int  # the answer's HTTP status


def requests_of(state_dir: Path, user: str = USER) -> list[Request]:
    """Every request ``user`` made, from the sandbox's audit log (it records the worker
    chart's namespace's service accounts), each once with the status it was answered."""
    answered: dict[str, Request] = {}
    for line in audit_log(state_dir).read_text().splitlines():
        event = json.loads(line)
        if event["user"].get("username") != user or "responseStatus" not in event:
            continue
        ref = event.get("objectRef") or {}
        resource = (f"{ref['resource']}/{ref['subresource']}" if ref.get("subresource")
                    else ref.get("resource") or event["requestURI"].split("?", 1)[0])
        answered[event["auditID"]] = Request(event["verb"], resource, ref.get("namespace"),
                                             int(event["responseStatus"].get("code", 0)))
    return list(answered.values())


# ---- what a set of RBAC rules allows, as the API server's escalation check reads them --------

@dataclass(frozen=True)
class Right:
    group: str
    resource: str
    verb: str
    name: str | None  # None: any object


def rights(rules: Iterable[dict[str, Any]]) -> set[Right]:
    return {Right(group, resource, verb, name)
            for rule in rules for group in rule.get("apiGroups") or []
            for resource in rule.get("resources") or [] for verb in rule["verbs"]
            for name in (rule.get("resourceNames") or [None])}


def covered(wanted: Right, held: set[Right]) -> bool:
    """Whether ``held`` allows ``wanted``: wildcards match anything, and a right on named
    objects is covered by one on the same names or on every object."""
    return any(h.group in ("*", wanted.group) and h.resource in ("*", wanted.resource)
               and h.verb in ("*", wanted.verb) and h.name in (None, wanted.name)
               for h in held)
