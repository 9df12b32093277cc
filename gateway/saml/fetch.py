"""Downloading IdP metadata from a URL without becoming a way into the network.

The metadata URL comes from the settings, but where it leads does not: a
redirect, or a DNS answer, could point the gateway at an address inside the
network (a cloud metadata service, an admin port on loopback). So:

- one deadline (``saml.metadata_timeout``) covers everything: name
  resolution, connecting, TLS, every redirect, the headers and the body, so
  a server that answers a byte at a time is stopped like a silent one;
- the body is capped at :data:`MAX_METADATA_BYTES`;
- a redirect is followed only from https to https, at most
  :data:`MAX_REDIRECTS` times;
- every address a host name resolves to, on every hop and the first URL
  included, must be public (not loopback, private, link-local, CGNAT,
  multicast, reserved or unspecified, nor those written as IPv4-mapped,
  6to4 or NAT64 IPv6 addresses) unless it is in ``allowed`` (the networks of
  ``saml.metadata_allow_networks``);
- the connection goes to the address that was checked, never to a second
  resolution of the name, so a DNS answer cannot change in between
  (rebinding); TLS still verifies the certificate against the host name;
- plain http is used only for a loopback URL (a test or a development IdP),
  and never follows a redirect.

No HTTP proxy is used: the checks above need the address the gateway
connects to.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_METADATA_BYTES = 2 * 1024 * 1024
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "entra-identity-gateway"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(Exception):
    """The URL could not be fetched within the rules above; the text says why in one line."""


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    ca_file: str = ""
    max_bytes: int = MAX_METADATA_BYTES

    @classmethod
    def from_settings(cls, saml) -> FetchPolicy:
        allowed = tuple(ipaddress.ip_network(n, strict=False) for n in saml.metadata_allow_networks)
        return cls(float(saml.metadata_timeout), allowed, saml.metadata_ca_file)

    def permits(self, address: str) -> bool:
        if is_public(address):
            return True
        ip = _address(address)
        return ip is not None and any(form in net for form in _forms(ip) for net in self.allowed)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _forms(ip) -> list:
    """The address and any IPv4 address it carries (IPv4-mapped, 6to4, NAT64)."""
    forms = [ip]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            forms.append(ip.sixtofour)
        if ip in _NAT64:
            forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return forms


def is_public(address: str) -> bool:
    """Whether ``address`` (and any IPv4 address it embeds) is reachable on the public internet."""
    ip = _address(address)
    if ip is None:
        return False
    for form in _forms(ip):
        if form is ip and ip.version == 6 and (ip.ipv4_mapped is not None or ip in _NAT64):
            continue  # ::ffff:a.b.c.d and 64:ff9b::a.b.c.d (DNS64) reach a.b.c.d: that form decides
        if not form.is_global or form.is_multicast or form.is_reserved or form.is_unspecified:
            return False
        if form.is_private or form.is_loopback or form.is_link_local:
            return False
    return True


def fetch_url(url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` (status 200) under the rules of this module; FetchError otherwise."""
    deadline = time.monotonic() + policy.timeout
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            status, location, body = _get(url, policy, deadline)
            if status in REDIRECTS:
                target = urljoin(url, (location or "").strip())
                if not location or urlsplit(url).scheme != "https" or urlsplit(target).scheme != "https":
                    raise FetchError(
                        f"redirect from {url} to {target or 'nowhere'} refused: metadata is fetched over https only"
                    )
                url = target
                continue
            if status != 200:
                raise FetchError(f"HTTP {status} from {url}")
            return body
        raise FetchError(f"more than {MAX_REDIRECTS} redirects from {url}")
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline:
            raise FetchError(_late(url, policy)) from None
        raise FetchError(f"cannot fetch {url}: {exc.__class__.__name__}: {exc}".rstrip(": ")) from None


def _late(url: str, policy: FetchPolicy) -> str:
    return f"no complete answer from {url} within {policy.timeout:g} s (saml.metadata_timeout)"


def _get(url: str, policy: FetchPolicy, deadline: float) -> tuple[int, str | None, bytes]:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise FetchError(f"{url} is not an https URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port, deadline, url, policy)
    for _family, _type, _proto, _name, sockaddr in addresses:
        if not policy.permits(sockaddr[0]):
            raise FetchError(
                f"{host} resolves to {sockaddr[0]}, which is not a public address"
                " (saml.metadata_allow_networks lists the networks allowed)"
            )
        if parts.scheme == "http" and not _address(sockaddr[0]).is_loopback:
            raise FetchError(f"{url}: plain http is used only for loopback addresses")
    sock = _connect(addresses, deadline, url, policy)
    try:
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=policy.ca_file or None)
            sock.settimeout(_left(deadline, url, policy))
            # The handshake as a whole is bounded by the socket's timeout.
            sock = context.wrap_socket(sock, server_hostname=host)
        connection = _Connection(host, port, _DeadlineSocket(sock, deadline, url, policy))
        connection.putrequest("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), skip_host=True)
        # The Host header as the URL writes it (netloc without credentials).
        connection.putheader("Host", parts.netloc.rpartition("@")[2])
        connection.putheader("User-Agent", USER_AGENT)
        connection.putheader("Accept", "application/samlmetadata+xml, application/xml, text/xml")
        connection.putheader("Connection", "close")
        connection.endheaders()
        response = connection.getresponse()
        if response.status != 200:
            return response.status, response.getheader("Location"), b""
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > policy.max_bytes:
            raise FetchError(f"{url} is larger than {policy.max_bytes} bytes")
        chunks, size = [], 0
        while True:
            chunk = response.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > policy.max_bytes:
                raise FetchError(f"{url} is larger than {policy.max_bytes} bytes")
            chunks.append(chunk)
        return 200, None, b"".join(chunks)
    finally:
        sock.close()


def _left(deadline: float, url: str, policy: FetchPolicy) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(_late(url, policy))
    return left


def _resolve(host: str, port: int, deadline: float, url: str, policy: FetchPolicy) -> list:
    """getaddrinfo under the deadline (it has no timeout of its own: it runs in a thread that may outlive it)."""
    answer: dict = {}

    def resolve():
        try:
            answer["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            answer["error"] = exc

    thread = threading.Thread(target=resolve, name="metadata-resolve", daemon=True)
    thread.start()
    thread.join(_left(deadline, url, policy))
    if "error" in answer:
        raise FetchError(f"cannot resolve {host}: {answer['error']}")
    if "addresses" not in answer:
        raise FetchError(_late(url, policy))
    if not answer["addresses"]:
        raise FetchError(f"cannot resolve {host}")
    return answer["addresses"]


def _connect(addresses: list, deadline: float, url: str, policy: FetchPolicy) -> socket.socket:
    """A TCP connection to the first checked address that accepts one."""
    error: OSError | None = None
    for family, kind, proto, _name, sockaddr in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_left(deadline, url, policy))
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except FetchError:
            sock.close()
            raise
    raise FetchError(f"cannot connect to {urlsplit(url).hostname}: {error}")


class _DeadlineSocket:
    """What http.client needs of a socket, with every send and receive bounded by the one deadline."""

    def __init__(self, sock: socket.socket, deadline: float, url: str, policy: FetchPolicy):
        self.sock, self.deadline, self.url, self.policy = sock, deadline, url, policy

    def arm(self) -> None:
        self.sock.settimeout(_left(self.deadline, self.url, self.policy))

    def sendall(self, data) -> None:
        self.arm()
        self.sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        # http.client closes its connection as soon as a "Connection: close"
        # response begins, handing the socket to the response; _get closes it.
        pass


class _Reader(io.RawIOBase):
    def __init__(self, owner: _DeadlineSocket):
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Each receive gets what is left of the deadline, not a fresh timeout:
        # a byte every few seconds cannot stretch the fetch.
        self.owner.arm()
        return self.owner.sock.recv_into(buffer)


class _Connection(http.client.HTTPConnection):
    """http.client's request and response handling over the connection opened (and checked) above.

    ``connect`` setting ``sock`` is how http.client's own HTTPSConnection
    plugs in its socket; the fetch tests (a slow drip stopped by the deadline,
    an oversized body) fail if http.client stops reading through it.
    """

    def __init__(self, host: str, port: int, sock: _DeadlineSocket):
        super().__init__(host, port)
        self._checked = sock

    def connect(self) -> None:
        self.sock = self._checked
