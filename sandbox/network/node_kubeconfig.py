"""Kubeconfigs for processes on a node namespace (flanneld, the Cilium agent...).

They reach the API server at the underlay gateway, an address its serving certificate does not
name, so the kubeconfig says which name to verify instead (``tls-server-name``), as clients
reaching an API server through a load balancer's address do.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from sandbox import pki
from sandbox.controlplane import write_kubeconfig_file

SERVER_NAME = "kubernetes"  # a SAN of every API server kubeadm (and sandbox.pki) makes


def serving_names(cert: Path) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses the certificate is valid for."""
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    names = {name.lower() for name in sans.get_values_for_type(x509.DNSName)}
    addresses = {str(address) for address in sans.get_values_for_type(x509.IPAddress)}
    return names, addresses


def server_name_for(server: str, serving_cert: Path) -> str | None:
    """The name to verify the serving certificate against, when the URL's host is not in it."""
    host = urlsplit(server).hostname
    if host is None:
        raise ValueError(f"server URL {server!r} has no host")
    names, addresses = serving_names(serving_cert)
    try:
        if str(ipaddress.ip_address(host)) in addresses:
            return None
    except ValueError:
        if host.lower() in names:
            return None
    if SERVER_NAME in names:
        return SERVER_NAME
    if names:
        return sorted(names)[0]
    raise ValueError(f"serving certificate {serving_cert} names no host; cannot reach it at "
                     f"{host}")


def write_node_kubeconfig(path: Path, server: str, ca_cert: Path, token: str,
                          serving_cert: Path | None = None, user: str = "node") -> Path:
    """Writes a kubeconfig (mode 0600) that trusts ``ca_cert`` and sends ``token``.
    ``serving_cert`` defaults to the API server's certificate beside the CA (sandbox.pki)."""
    serving_cert = serving_cert or pki.PkiPaths(ca_cert.parent).apiserver_cert
    cluster: dict[str, str] = {"server": server, "certificate-authority": str(ca_cert)}
    server_name = server_name_for(server, serving_cert)
    if server_name is not None:
        cluster["tls-server-name"] = server_name
    return write_kubeconfig_file(path, "sandbox", cluster, user, {"token": token})
