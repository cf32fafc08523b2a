"""Password and secret hashing: scrypt with a per-secret salt, parameters encoded.

The encoded form is ``scrypt$<n>$<r>$<p>$<salt b64url>$<hash b64url>`` so the
parameters can be raised later without breaking stored hashes. Comparison is
constant-time. Nothing here logs or returns a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from edged.tokens import b64url, unb64url

N, R, P = 2**14, 8, 1
DKLEN = 32
SALT_BYTES = 16
# scrypt with n=2**14, r=8 needs 16 MiB; leave headroom for larger stored parameters.
_MAXMEM = 128 * 1024 * 1024


def _derive(secret: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=_MAXMEM)


def hash_secret(secret: str) -> str:
    """The encoded scrypt hash of ``secret`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(secret, salt, N, R, P, DKLEN)
    return f"scrypt${N}${R}${P}${b64url(salt)}${b64url(digest)}"


def check_secret(secret: str, encoded: str | None) -> bool:
    """Whether ``secret`` matches ``encoded``; False for anything malformed."""
    if not encoded:
        # Same work as a real check, so an unknown user costs what a known one does.
        _derive(secret, b"\0" * SALT_BYTES, N, R, P, DKLEN)
        return False
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = unb64url(digest)
        actual = _derive(secret, unb64url(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def new_secret() -> str:
    """A random secret for an application credential (shown to its owner once)."""
    return secrets.token_urlsafe(32)
