"""Certificates and keys for the sandbox control plane, made locally like kubeadm would.

One CA signs the API server's serving certificate and one client certificate per identity
(admin, controller manager, scheduler, node simulator, the product's worker). The identities
use the users and groups Kubernetes' bootstrap RBAC already knows, so authorization is the real
thing.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: CN is the user name, O the groups."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")
# The simulator plays every kubelet; kubelets are many identities, so it uses admin rights.
NODE_SIMULATOR = ClientIdentity("node-simulator", "cilium-migrate:node-simulator",
                                ("system:masters",))

# The product's worker, so the API server's audit log tells its requests from everyone else's.
# Cluster-admin rights, as a worker run with an operator's kubeconfig has: installing Cilium
# grants ClusterRoles, which RBAC allows only to a user holding every right granted (the reason
# the worker's Helm chart, deploy/cilium-migrate-worker, binds Helm's rights apart). What the
# sandbox needs is a name of its own.
WORKER = ClientIdentity("worker", "cilium-migrate-worker", ("system:masters",))

CLIENT_IDENTITIES = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, NODE_SIMULATOR, WORKER)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = _key()
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, subject: x509.Name, *, server_names: tuple[str, ...] = (),
              server_ips: tuple[str, ...] = ()) -> tuple[ec.EllipticCurvePrivateKey,
                                                         x509.Certificate]:
        key = _key()
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if (server_names or server_ips) else []
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now()).not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if server_names or server_ips:
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names),
                                            critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


@dataclass(frozen=True)
class PkiPaths:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, identity: ClientIdentity) -> Path:
        return self.directory / f"{identity.file_stem}.crt"

    def client_key(self, identity: ClientIdentity) -> Path:
        return self.directory / f"{identity.file_stem}.key"


def create_pki(directory: Path, service_ip: str) -> PkiPaths:
    """Writes the CA, serving, client and service-account keys into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = PkiPaths(directory)
    ca = CertificateAuthority.create("cilium-migrate-sandbox-ca")
    _write_key(paths.ca_key, ca.key)
    _write_cert(paths.ca_cert, ca.cert)

    key, cert = ca.issue(
        _name("kube-apiserver"),
        server_names=("localhost", "kubernetes", "kubernetes.default",
                      "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
        server_ips=("127.0.0.1", service_ip),
    )
    _write_key(paths.apiserver_key, key)
    _write_cert(paths.apiserver_cert, cert)

    for identity in CLIENT_IDENTITIES:
        key, cert = ca.issue(_name(identity.user, identity.groups))
        _write_key(paths.client_key(identity), key)
        _write_cert(paths.client_cert(identity), cert)

    # Service-account tokens are signed with RSA, the algorithm every client library accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(paths.service_account_key, sa_key)
    paths.service_account_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths
