"""The stack's own certificate authority, so its HTTPS listeners are trusted by the functions only.

API Gateway's management endpoint is ``https://{domainName}/{stage}`` (the event's own fields, as
AWS's samples build it); the local stack serves ``@connections`` over HTTPS on loopback with a
certificate from a CA made when the stack starts (trustme: a throwaway CA, nothing kept, no key
ever written). The functions trust it through the files this writes into ``folder``:

- ``local-ca.pem``: the CA's certificate alone (for ``curl --cacert`` and the like);
- ``ca-bundle.pem``, for ``AWS_CA_BUNDLE``: the roots the functions' clients trusted before (the
  bundle ``AWS_CA_BUNDLE`` already named, else botocore's default roots) followed by the CA.
  botocore *replaces* its roots with that bundle for every client, so the roots must stay in it:
  calls to real AWS endpoints keep verifying as before; plain-http endpoints (the local DynamoDB)
  are not affected at all;
- ``node-extra-ca.pem``, for ``NODE_EXTRA_CA_CERTS`` (Node adds it to its own roots; it reads the
  variable once, at process start): the certificates ``NODE_EXTRA_CA_CERTS`` already named, if
  any, followed by the CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

import trustme
from botocore.httpsession import get_cert_path

from ..report.build import write_atomic

CA_FILE = "local-ca.pem"
BUNDLE_FILE = "ca-bundle.pem"
NODE_FILE = "node-extra-ca.pem"


class TrustError(ValueError):
    """A CA file the environment names cannot be read; the message says which and what to do."""


def _pem(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").rstrip() + "\n"
    except (OSError, UnicodeDecodeError) as exc:
        raise TrustError(f"{variable} names {path}, which cannot be read ({exc}); fix or unset it") from None


class LocalCA:
    """A CA and one server certificate for ``identities`` (host names and IP addresses)."""

    def __init__(self, folder: Path, identities: tuple[str, ...], environment: Mapping[str, str] | None = None
                 ) -> None:
        """Writes the three files into ``folder`` (made if missing), each atomically; ``environment``
        (default: empty) is where ``AWS_CA_BUNDLE`` and ``NODE_EXTRA_CA_CERTS`` already point, whose
        certificates the bundles keep. Raises ``TrustError`` when one of those cannot be read."""
        environment = environment or {}
        self._ca = trustme.CA(organization_name="relay-harness local stack")
        self._leaf = self._ca.issue_cert(*dict.fromkeys(identities))
        ca_pem = self._ca.cert_pem.bytes().decode("ascii")
        roots = _pem(environment.get("AWS_CA_BUNDLE") or get_cert_path(True), "AWS_CA_BUNDLE")
        extra = _pem(environment["NODE_EXTRA_CA_CERTS"], "NODE_EXTRA_CA_CERTS") if environment.get(
            "NODE_EXTRA_CA_CERTS") else ""
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_file, self.bundle_file, self.node_file = folder / CA_FILE, folder / BUNDLE_FILE, folder / NODE_FILE
        label = "# relay-harness local stack\n"
        write_atomic(self.ca_file, ca_pem)
        write_atomic(self.bundle_file, f"{roots}\n{label}{ca_pem}")
        write_atomic(self.node_file, f"{extra}\n{label}{ca_pem}" if extra else f"{label}{ca_pem}")

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate (TLS 1.2 or later)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context
