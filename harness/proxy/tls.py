"""TLS to a wss:// upstream: whose certificates the proxy trusts, and a one-line reason when the
handshake fails.

Verification is always on (there is no switch to turn it off): the server's certificate must chain
to a trusted CA and name the upstream's host. The CAs trusted are, first found:
``--upstream-ca FILE``, ``$SSL_CERT_FILE``, ``$REQUESTS_CA_BUNDLE`` (each a PEM bundle), else the
system trust store.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
HANDSHAKE_TIMEOUT = 10.0  # seconds for the TLS handshake, once TCP is connected
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED


@dataclass(frozen=True)
class UpstreamTls:
    """What the proxy needs to speak TLS to one upstream host."""

    context: ssl.SSLContext
    host: str  # the name sent as SNI and checked against the certificate
    trust: str  # where the trusted CAs come from, for messages: "the system trust store", "--upstream-ca X"
    handshake_timeout: float = HANDSHAKE_TIMEOUT  # seconds, once TCP is connected

    def explain(self, exc: BaseException) -> str:
        """One line: what went wrong in the handshake with ``host`` and how to fix it."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = exc.verify_message or exc.reason or str(exc)
            if exc.verify_code in _NAME_MISMATCH:  # "Hostname mismatch, certificate is not valid for 'x'."
                return (f"TLS: the certificate is not valid for {self.host} ({detail.split(',')[0]}); connect by "
                        f"a name the certificate covers")
            if exc.verify_code == _EXPIRED:
                return f"TLS: the certificate of {self.host} has expired; renew it on the server"
            return (f"TLS: the certificate of {self.host} is not trusted ({detail}) by {self.trust}; pass "
                    f"--upstream-ca FILE (PEM) with the CA that signed it")
        if isinstance(exc, TimeoutError):
            return (f"TLS: no handshake with {self.host} within {self.handshake_timeout:g} s; check that the port "
                    f"speaks TLS (else use ws://)")
        if isinstance(exc, ssl.SSLError):
            return (f"TLS: handshake with {self.host} failed ({exc.reason or exc}); check that the port speaks "
                    f"TLS (else use ws://)")
        detail = getattr(exc, "strerror", None) or str(exc) or "the server closed the connection"
        return f"TLS: no handshake with {self.host}: {detail}; check that the port speaks TLS (else use ws://)"


def upstream_tls(host: str, ca_file: str | None = None, environ: Mapping[str, str] = os.environ) -> UpstreamTls:
    """The TLS settings for ``host``: verification on, CAs from ``ca_file`` or the conventions above.

    Raises ValueError with a one-line message when the CA bundle cannot be read or holds no
    certificate."""
    source = "--upstream-ca"
    if not ca_file:
        source, ca_file = next(((f"${name}", environ[name]) for name in CA_VARIABLES if environ.get(name)),
                               ("", None))
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise ValueError(f"{source} {ca_file}: no such file; pass a PEM bundle of the CAs to trust") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ValueError(f"{source} {ca_file}: not a readable PEM CA bundle ({reason}); pass a PEM file of "
                         f"CA certificates") from None
    context.set_alpn_protocols(["http/1.1"])  # a WebSocket upgrade is HTTP/1.1
    return UpstreamTls(context, host, f"{source} {ca_file}" if ca_file else "the system trust store")
