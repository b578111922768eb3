"""Member and session ids: secrets, so they come from the OS's CSPRNG."""

import secrets

# 12 bytes = 96 bits of randomness, 16 characters of the URL-safe alphabet (never '.').
_ID_BYTES = 12


def new_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)
