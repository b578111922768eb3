"""The stack's own certificate authority, so its HTTPS listeners are trusted by the functions only.

API Gateway's management endpoint is ``https://{domainName}/{stage}`` (the event's own fields, as
AWS's samples build it); the local stack serves ``@connections`` over HTTPS on loopback with a
certificate from a CA made when the stack starts (trustme: a throwaway CA, nothing kept, no key
ever written). The functions trust it through the files this writes into ``folder``:

- ``local-ca.pem``: the CA's certificate alone, for ``NODE_EXTRA_CA_CERTS`` (Node adds it to its
  own roots; it reads the variable once, at process start);
- ``ca-bundle.pem``: botocore's default roots followed by the CA, for ``AWS_CA_BUNDLE``. botocore
  *replaces* its roots with that bundle for every client, so the roots must stay in it: a
  function's calls to real AWS endpoints keep verifying as before; plain-http endpoints (the local
  DynamoDB) are not affected at all.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme
from botocore.httpsession import get_cert_path

from ..report.build import write_atomic

CA_FILE = "local-ca.pem"
BUNDLE_FILE = "ca-bundle.pem"


class LocalCA:
    """A CA and one server certificate for ``identities`` (host names and IP addresses)."""

    def __init__(self, folder: Path, identities: tuple[str, ...]) -> None:
        """Writes ``folder``/local-ca.pem and ``folder``/ca-bundle.pem (atomically, made if missing)."""
        self._ca = trustme.CA(organization_name="relay-harness local stack")
        self._leaf = self._ca.issue_cert(*dict.fromkeys(identities))
        folder.mkdir(parents=True, exist_ok=True)
        self.ca_file = folder / CA_FILE
        self.bundle_file = folder / BUNDLE_FILE
        ca_pem = self._ca.cert_pem.bytes().decode("ascii")
        roots = Path(get_cert_path(True)).read_text(encoding="utf-8")
        write_atomic(self.ca_file, ca_pem)
        write_atomic(self.bundle_file, f"{roots.rstrip()}\n\n# relay-harness local stack\n{ca_pem}")

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the certificate (TLS 1.2 or later)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context
