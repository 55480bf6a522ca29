"""What busybox's wget and nslookup say in the situations a probe pod meets, so the simulated
probe prints what the product's probe script would print in a real pod.

Facts, from busybox's networking/wget.c and its TLS code, and from reports against the
`busybox` images:

- wget before 1.37 cannot finish a TLS handshake with Go's TLS servers (the API server is one):
  the server sends alert 40 and wget says so, then fails to read a response.
- wget with ``-T 5`` whose connection gets no reply at all gives up with "download timed out".
- Any HTTP status other than 2xx and redirects makes wget exit 1 with "server returned error:
  <status line>"; the script reads the status from it, so every answer is reported with its
  status and no error text.

nslookup, observed with Debian trixie's static busybox 1.37 (the sandbox's, `sandbox/nettools.py`)
in a pod namespace of the real-network sandbox (`tests/network/test_real_dns.py` holds the first
two), its resolv.conf the kubelet's (``search <ns>.svc.cluster.local svc.cluster.local
cluster.local``, ``options ndots:5``) and the sandbox's CoreDNS 1.15.0 behind kube-dns:

- It never applies the search list: ``nslookup kubernetes.default`` sends exactly
  ``kubernetes.default`` (A, then AAAA) and nothing else, whatever ``ndots`` says; a name found
  prints ``Name:\t<name>`` and ``Address: <ip>`` after the server's header, exit 0.
- A name the server does not know prints ``** server can't find <name>: NXDOMAIN`` once per
  query type (twice), exit 1; ``kubernetes.default`` itself, outside CoreDNS's zones and with no
  ``forward`` in the sandbox's Corefile, is SERVFAIL (CoreDNS logs "no next plugin found").
- No server answering (a ClusterIP without endpoints, packets dropped) prints
  ``;; connection timed out; no servers could be reached`` after 5 s, exit 1.

Written apart from the product's script (nothing is imported from `activities`): if the two
disagree, the sandbox's tests say so.
"""

from __future__ import annotations

import re

FIXED_TLS = (1, 37)  # the first release whose wget completes a handshake with Go servers
TLS_FAILURE = ("wget: TLS error from peer (alert code 40): handshake failure",
               "wget: error getting response: Connection reset by peer")
NO_REPLY = ("wget: download timed out",)

_TAG_VERSION = re.compile(r"^(\d+)\.(\d+)")


def busybox_version(image: str) -> tuple[int, int] | None:
    """(major, minor) of a ``busybox`` image's tag ("1.36.1-musl" -> (1, 36)); None for other
    images and for tags without a version (``latest``), which are taken to be current."""
    name, _, tag = image.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")
    if name != "busybox":
        return None
    match = _TAG_VERSION.match(tag)
    return (int(match[1]), int(match[2])) if match else None


def tls_handshake_fails(image: str) -> bool:
    version = busybox_version(image)
    return version is not None and version < FIXED_TLS


def as_reported(lines: tuple[str, ...] | list[str]) -> str:
    """wget's messages as the probe script reports them: non-empty lines joined with "; ",
    printable ASCII only, no quotes or backslashes, at most 300 characters."""
    joined = "; ".join(line for line in lines if line.split())
    kept = "".join(c for c in joined if " " <= c <= "~" and c not in '"\\')
    return kept[:300]


# ---- nslookup --------------------------------------------------------------------------------

NSLOOKUP_NO_SERVER = (";; connection timed out; no servers could be reached",)


def nslookup_not_found(name: str, rcode: str = "NXDOMAIN") -> tuple[str, ...]:
    return (f"** server can't find {name}: {rcode}",) * 2  # one per query type, A and AAAA


def nslookup_error(lines: tuple[str, ...] | list[str]) -> str:
    """nslookup's diagnostics as the probe reports them: the server header left out, then
    cleaned like wget's messages."""
    return as_reported([line for line in lines
                        if not line.startswith(("Server:", "Address:"))])
