"""Secrets in a site's desired document, sealed to that site's own CURVE key.

Shared by central (which seals) and edged (which opens). CURVE already
encrypts the channel, but a ZeroMQ ROUTER routes by the id a peer chose, so a
compromised site holding its own enrolled key could take over another site's
routing id and receive its documents for a while (README, known limits). A
volume key in a document is therefore sealed to the receiving site's CURVE
public key (X25519), which only that site's secret key opens::

    base64( ephemeral public key (32) || nonce (12) ||
            ChaCha20-Poly1305(k, nonce, secret, aad=label) )
    k = HKDF-SHA256(X25519(ephemeral, site), salt=ephemeral pub || site pub,
                    info="skerry sealed secret v1")

``label`` (the volume id) binds a sealed secret to its place in the document,
so one cannot be moved to another volume. Errors never hold secret material.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from zmq.utils import z85

_INFO = b"skerry sealed secret v1"
_PUB, _NONCE = 32, 12
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(Exception):
    """A sealed secret that cannot be opened (wrong key, tampered, malformed)."""


def _key(shared: bytes, eph_pub: bytes, site_pub: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + site_pub, info=_INFO)
    return hkdf.derive(shared)


def _curve_key(z85_key: str) -> bytes:
    try:
        raw = z85.decode(z85_key.encode("ascii"))
    except Exception as exc:  # bad alphabet or length: never echo the key
        raise SealError("not a Z85 CURVE key") from exc
    if len(raw) != 32:
        raise SealError("not a 32-byte CURVE key")
    return raw


def seal(site_public_z85: str, secret: bytes, label: str) -> str:
    """``secret`` sealed to the site whose CURVE public key is ``site_public_z85``."""
    site_pub = _curve_key(site_public_z85)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(*_RAW)
    shared = eph.exchange(X25519PublicKey.from_public_bytes(site_pub))
    nonce = os.urandom(_NONCE)
    box = ChaCha20Poly1305(_key(shared, eph_pub, site_pub))
    sealed = box.encrypt(nonce, secret, label.encode())
    return base64.b64encode(eph_pub + nonce + sealed).decode()


def open_sealed(site_secret_z85: str, blob: str, label: str) -> bytes:
    """The secret in ``blob``, opened with the site's CURVE secret key; SealError if it
    cannot be (another site's, another label's, or tampered)."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise SealError("sealed secret is not base64") from exc
    if len(raw) < _PUB + _NONCE + 16:
        raise SealError("sealed secret is too short")
    eph_pub, nonce, sealed = raw[:_PUB], raw[_PUB : _PUB + _NONCE], raw[_PUB + _NONCE :]
    me = X25519PrivateKey.from_private_bytes(_curve_key(site_secret_z85))
    site_pub = me.public_key().public_bytes(*_RAW)
    try:
        shared = me.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return ChaCha20Poly1305(_key(shared, eph_pub, site_pub)).decrypt(
            nonce, sealed, label.encode()
        )
    except (InvalidTag, ValueError) as exc:
        raise SealError("sealed secret does not open with this site's key") from exc
