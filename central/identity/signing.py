"""Token-signing keys: Ed25519, stored in ``signing_keys`` (state_dir is private).

Several keys can be active: the newest signs, all active keys verify. A retired
key's tokens stop validating at once, since the snapshot no longer carries it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.store import Store, now
from edged.tokens import public_key_text


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey


def add_key(store: Store) -> str:
    """Generate and store a new active key; returns its kid."""
    key = Ed25519PrivateKey.generate()
    kid = secrets.token_hex(4)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    store.db["signing_keys"].insert(
        {
            "kid": kid,
            "private_pem": pem,
            "public_key": public_key_text(key),
            "state": "active",
            "created_at": now(),
        }
    )
    return kid


def newest_active(store: Store) -> SigningKey | None:
    """The key new tokens are signed with."""
    row = store.one(
        "SELECT kid, private_pem FROM signing_keys WHERE state = 'active' "
        "ORDER BY created_at DESC, rowid DESC LIMIT 1"
    )
    if row is None:
        return None
    private = serialization.load_pem_private_key(row["private_pem"].encode(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    return SigningKey(row["kid"], private)


def list_keys(store: Store) -> list[dict]:
    """Keys without their private part."""
    return store.query(
        "SELECT kid, public_key, state, created_at FROM signing_keys ORDER BY created_at, rowid"
    )
