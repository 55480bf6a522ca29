"""A cluster as a FakeKube shaped like production for snapshot tests: zones, taints, a cordon-
worthy mix of workloads, a PDB, a PriorityClass, flannel on a non-default port, and values that
must never reach a snapshot (a Secret, ConfigMap data, env values, an image pull secret)."""

from __future__ import annotations

from tests.fake_kube import FakeKube, node

SECRET_VALUE = "hunter2-do-not-copy"
ENV_VALUE = "postgres://admin:s3cret@db"
CONFIG_VALUE = "feature-flags-from-configmap"


def production_like() -> FakeKube:
    kube = FakeKube()
    for name, zone, taints in (("cp-1", "eu-1a", [{"key": "node-role.kubernetes.io/"
                                                   "control-plane", "effect": "NoSchedule"}]),
                               ("w-1", "eu-1a", []),
                               ("w-2", "eu-1b", [{"key": "dedicated", "value": "db",
                                                  "effect": "NoSchedule"}])):
        obj = node(name)
        obj["metadata"]["labels"] = {"topology.kubernetes.io/zone": zone, "pool": "general"}
        if name == "cp-1":
            obj["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
        obj["spec"]["taints"] = taints
        obj["status"]["capacity"] = {"cpu": "4", "memory": "16Gi", "pods": "110"}
        obj["status"]["allocatable"] = {"cpu": "3800m", "memory": "15Gi", "pods": "110"}
        kube.add("/api/v1/nodes", obj)
    kube.add("/api/v1/namespaces", {"metadata": {"name": "shop", "labels": {"team": "a"}}})
    kube.add("/api/v1/namespaces/shop/secrets", {"metadata": {"name": "db"},
                                                 "data": {"password": SECRET_VALUE}})
    kube.add("/api/v1/namespaces/shop/configmaps", {"metadata": {"name": "flags"},
                                                    "data": {"flags": CONFIG_VALUE}})
    kube.add("/apis/apps/v1/namespaces/kube-flannel/daemonsets", {
        "metadata": {"name": "kube-flannel-ds"},
        "spec": {"selector": {"matchLabels": {"app": "flannel"}}, "template": {
            "metadata": {"labels": {"app": "flannel"}},
            "spec": {"tolerations": [{"operator": "Exists"}], "hostNetwork": True,
                     "containers": [{"name": "kube-flannel", "image": "flannel/flannel:v0.26",
                                     "command": ["/opt/bin/flanneld"]}],
                     "volumes": [{"name": "cfg", "configMap": {"name": "kube-flannel-cfg"}}]}}}})
    kube.add("/api/v1/namespaces/kube-flannel/configmaps", {
        "metadata": {"name": "kube-flannel-cfg"},
        "data": {"net-conf.json": '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", '
                                  '"Port": 8473}}'}})
    kube.add("/apis/apps/v1/namespaces/shop/deployments", {
        "metadata": {"name": "web", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": f'{{"env": "{ENV_VALUE}"}}'}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "nodeSelector": {"pool": "general"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db",
                                 "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname",
                     "labelSelector": {"matchLabels": {"app": "web"}}}]}},
                "topologySpreadConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule",
                                               "topologyKey": "topology.kubernetes.io/zone",
                                               "labelSelector": {"matchLabels": {"app": "web"}}}],
                "terminationGracePeriodSeconds": 45, "priorityClassName": "business",
                "imagePullSecrets": [{"name": "registry-credentials"}],
                "volumes": [{"name": "db", "secret": {"secretName": "db"}}],
                "containers": [{"name": "web", "image": "registry.example/web:1.2",
                                "env": [{"name": "DATABASE_URL", "value": ENV_VALUE}],
                                "envFrom": [{"configMapRef": {"name": "flags"}}],
                                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
            }}}})
    kube.add("/apis/apps/v1/namespaces/shop/replicasets", {
        "metadata": {"name": "web-5d8f", "ownerReferences": [
            {"kind": "Deployment", "name": "web", "controller": True}]},
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web"}]}}}})
    kube.add("/apis/apps/v1/namespaces/shop/statefulsets", {
        "metadata": {"name": "db"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "db"}}, "template": {
            "metadata": {"labels": {"app": "db"}},
            "spec": {"containers": [{"name": "db", "image": "postgres:17"}]}}}})
    kube.add("/apis/policy/v1/namespaces/shop/poddisruptionbudgets", {
        "metadata": {"name": "db-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}},
        "status": {"disruptionsAllowed": 0}})
    kube.add("/apis/scheduling.k8s.io/v1/priorityclasses", {
        "metadata": {"name": "business"}, "value": 1000, "preemptionPolicy": "Never"})
    return kube
