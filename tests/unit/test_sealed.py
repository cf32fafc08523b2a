"""Secrets sealed to a site's CURVE key: only that key opens them, for that label only."""

from __future__ import annotations

import base64

import pytest
import zmq

from edged.sealed import SealError, open_sealed, seal

SECRET_BYTES = bytes(range(32))


def keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def test_round_trip_and_fresh_each_time() -> None:
    public, secret = keypair()
    a, b = seal(public, SECRET_BYTES, "v1"), seal(public, SECRET_BYTES, "v1")
    assert a != b  # a fresh ephemeral key and nonce per seal
    assert open_sealed(secret, a, "v1") == open_sealed(secret, b, "v1") == SECRET_BYTES
    assert base64.b64encode(SECRET_BYTES).decode() not in a and SECRET_BYTES.hex() not in a


def test_only_the_site_and_the_label_open_it() -> None:
    public, secret = keypair()
    _, other_secret = keypair()
    blob = seal(public, SECRET_BYTES, "v1")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    for who, text, label in (
        (other_secret, blob, "v1"),  # another site's key
        (secret, blob, "v2"),  # moved to another volume
        (secret, base64.b64encode(bytes(raw)).decode(), "v1"),  # tampered
        (secret, "not base64!", "v1"),
        (secret, base64.b64encode(b"short").decode(), "v1"),
        ("not-a-key", blob, "v1"),
    ):
        with pytest.raises(SealError) as err:
            open_sealed(who, text, label)
        assert secret not in str(err.value)
    with pytest.raises(SealError):
        seal("short", SECRET_BYTES, "v1")
