"""Starts a real Kubernetes control plane on loopback: etcd, API server, controllers, scheduler.

Everything binds to 127.0.0.1 on ports chosen free at start, so two sandboxes run side by side.
The flags follow what kubeadm sets, minus what needs a kubelet; each unusual one says why.
"""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from sandbox import audit, egress, pki
from sandbox.processes import alive, free_port, start_process
from sandbox.toolchain import Toolchain
from sandbox.topology import (
    API_SERVICE_IP,
    CLUSTER_CIDR,
    NODE_CIDR_MASK,
    SERVICE_CIDR,
    ApiServerAddress,
)

# The API server refuses a loopback advertise address. This one (TEST-NET-1, RFC 5737) is where
# the simulated nodes reach the API server: `sandbox.bootstrap` publishes it as kubeadm does and
# the node simulator treats it as reachable from every node. Nothing on this machine dials it.
ADVERTISE_ADDRESS = "192.0.2.10"

# The simulator renews node leases every minute to stay cheap with hundreds of nodes, so the
# node lifecycle controller is told to wait longer than that before calling a node lost.
NODE_MONITOR_GRACE_PERIOD = "300s"

# The users whose requests the audit log records (see `sandbox.audit`), and the groups: the
# service accounts of the namespace the worker's Helm chart is installed in, so a test acting
# with the chart's ServiceAccount can tell what it asked for and what RBAC refused.
AUDITED = (pki.WORKER, pki.NODE_SIMULATOR, pki.ADMIN)
AUDITED_GROUPS = ("system:serviceaccounts:cilium-migrate",)


# A free port is only free until someone binds it: sandboxes started side by side (or any other
# program) can take it between `free_port` and the component's bind. A component that exits
# before it is healthy is started again on fresh ports, up to this many times in all.
START_ATTEMPTS = 3


class ControlPlaneError(RuntimeError):
    pass


class ComponentExited(ControlPlaneError):
    """The component's process ended before it was healthy (a port taken meanwhile, say)."""


def write_kubeconfig(path: Path, server: str, paths: pki.PkiPaths,
                     identity: pki.ClientIdentity, cluster_name: str) -> None:
    write_kubeconfig_file(path, cluster_name, {
        "server": server, "certificate-authority": str(paths.ca_cert)}, identity.user, {
        "client-certificate": str(paths.client_cert(identity)),
        "client-key": str(paths.client_key(identity))})


def write_kubeconfig_file(path: Path, cluster_name: str, cluster: dict[str, str], user: str,
                          credentials: dict[str, str]) -> Path:
    """A kubeconfig of one cluster, one user and their context, readable by its owner only
    (made so before the credentials are in it)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wait_healthy(url: str, what: str, log: Path, timeout: float,
                  context: ssl.SSLContext | None = None, pid: int | None = None) -> None:
    """Waits until ``url`` answers 200. With ``pid``, the answer counts only while that process
    runs: on a port taken by another program the health check would pass while ours exited."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise ComponentExited(f"{what} exited before it was healthy; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                if response.status == 200 and (pid is None or alive(pid)):
                    return
        except (urllib.error.URLError, OSError) as error:
            last_error = str(error)
        time.sleep(0.5)
    raise ControlPlaneError(f"{what} did not become healthy within {timeout:.0f}s "
                            f"({last_error}); see {log}")


class ControlPlane:
    """Starts the four control-plane processes for one state directory and records their PIDs."""

    def __init__(self, state_dir: Path, toolchain: Toolchain, cluster_name: str,
                 advertise_address: str = ADVERTISE_ADDRESS,
                 node_cidr_mask: int = NODE_CIDR_MASK) -> None:
        self.state_dir = state_dir
        self.node_cidr_mask = node_cidr_mask
        self.advertise_address = advertise_address
        self.toolchain = toolchain
        self.cluster_name = cluster_name
        self.log_dir = state_dir / "logs"
        self.pids: dict[str, int] = {}
        self.ports: dict[str, int] = {}
        self.pki = pki.create_pki(state_dir / "pki", API_SERVICE_IP)

    @property
    def server(self) -> str:
        """The API server's URL on this machine (the admin kubeconfig's)."""
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def node_address(self) -> ApiServerAddress:
        """Where the nodes reach the API server."""
        return ApiServerAddress(host=self.advertise_address, port=self.ports["apiserver"])

    def kubeconfig(self, identity: pki.ClientIdentity) -> Path:
        if identity is pki.ADMIN:
            return self.state_dir / "kubeconfig"
        return self.state_dir / "kubeconfigs" / f"{identity.file_stem}.kubeconfig"

    def start(self, timeout: float = 120.0) -> None:
        self._started(("etcd", "etcd-peer"), lambda: self._start_etcd(timeout))
        self._started(("apiserver",), lambda: self._start_apiserver(timeout))
        for identity in pki.CLIENT_IDENTITIES:
            write_kubeconfig(self.kubeconfig(identity), self.server, self.pki, identity,
                             self.cluster_name)
        self._started(("controller-manager",), lambda: self._start_controller_manager(timeout))
        self._started(("scheduler",), lambda: self._start_scheduler(timeout))

    def _started(self, ports: tuple[str, ...], start: Callable[[], None]) -> None:
        """Starts a component on fresh ``ports`` until it is healthy (START_ATTEMPTS)."""
        for attempt in range(1, START_ATTEMPTS + 1):
            for name in ports:
                self.ports[name] = free_port()
            try:
                start()
                return
            except ComponentExited:
                if attempt == START_ATTEMPTS:
                    raise

    def _start_etcd(self, timeout: float) -> None:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        self.pids["etcd"] = start_process("etcd", [
            str(self.toolchain["etcd"]),
            "--name=sandbox",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=sandbox={peer}",
            "--listen-metrics-urls=",
            # A disposable cluster: durability is not worth an fsync per write on a 2-core box.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ], self.log_dir)
        wait_healthy(f"{client}/health", "etcd", self.log_dir / "etcd.log", timeout,
                     pid=self.pids["etcd"])

    def _start_apiserver(self, timeout: float) -> None:
        paths = self.pki
        policy = audit.write_policy(self.state_dir / audit.AUDIT_POLICY,
                                    [identity.user for identity in AUDITED], AUDITED_GROUPS)
        self.pids["kube-apiserver"] = start_process("kube-apiserver", [
            str(self.toolchain["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}",
            f"--advertise-address={self.advertise_address}",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--client-ca-file={paths.ca_cert}",
            # Without a request-header CA every delegating component logs an error per resync.
            f"--requestheader-client-ca-file={paths.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--tls-cert-file={paths.apiserver_cert}",
            f"--tls-private-key-file={paths.apiserver_key}",
            f"--service-account-key-file={paths.service_account_pub}",
            f"--service-account-signing-key-file={paths.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The node-shell reboot strategy runs a privileged host-PID pod, as on real clusters.
            "--allow-privileged=true",
            "--profiling=false",
            # Who asked for what, so a benchmark can count the product's own requests.
            f"--audit-policy-file={policy}",
            # The pod, service and node proxies dial through the node simulator, which
            # decides where such a connection may go (see `sandbox.egress`).
            f"--egress-selector-config-file={egress.write_config(self.state_dir)}",
            f"--audit-log-path={audit.audit_log(self.state_dir)}",
            # Never rotated, so a count reads the whole run. Up to Kubernetes 1.35, 0 is not
            # "never": the rotation library then uses its own 100 MB (kubernetes#136478 made 0
            # mean unlimited later), which a 1,000-node migration passes. So 1 TB.
            "--audit-log-maxsize=1000000",
            "--v=1",
        ], self.log_dir)
        context = ssl.create_default_context(cafile=str(paths.ca_cert))
        context.load_cert_chain(str(paths.client_cert(pki.ADMIN)),
                                str(paths.client_key(pki.ADMIN)))
        wait_healthy(f"{self.server}/readyz", "kube-apiserver",
                     self.log_dir / "kube-apiserver.log", timeout, context,
                     pid=self.pids["kube-apiserver"])

    def _start_controller_manager(self, timeout: float) -> None:
        paths = self.pki
        kubeconfig = self.kubeconfig(pki.CONTROLLER_MANAGER)
        self.pids["kube-controller-manager"] = start_process("kube-controller-manager", [
            str(self.toolchain["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['controller-manager']}",
            "--leader-elect=false",
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--root-ca-file={paths.ca_cert}",
            f"--service-account-private-key-file={paths.service_account_key}",
            f"--cluster-signing-cert-file={paths.ca_cert}",
            f"--cluster-signing-key-file={paths.ca_key}",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={CLUSTER_CIDR}",
            f"--node-cidr-mask-size={self.node_cidr_mask}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
            "--v=1",
        ], self.log_dir)
        self._wait_serving("controller-manager", timeout)

    def _start_scheduler(self, timeout: float) -> None:
        kubeconfig = self.kubeconfig(pki.SCHEDULER)
        self.pids["kube-scheduler"] = start_process("kube-scheduler", [
            str(self.toolchain["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports['scheduler']}",
            "--leader-elect=false",
            "--v=1",
        ], self.log_dir)
        self._wait_serving("scheduler", timeout)

    def _wait_serving(self, name: str, timeout: float) -> None:
        """kube-controller-manager's or kube-scheduler's /healthz, from its own process."""
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # their serving certs are self-signed on the fly
        wait_healthy(f"https://127.0.0.1:{self.ports[name]}/healthz", f"kube-{name}",
                     self.log_dir / f"kube-{name}.log", timeout, insecure,
                     pid=self.pids[f"kube-{name}"])
