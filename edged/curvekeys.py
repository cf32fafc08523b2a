"""CURVE key files and Z85 keys: part of the control-channel contract.

A key file (central's ``hub_curve.key``, a site's ``curve_secret_key_file``)
is text, mode 0600, two lines::

    public: <40 Z85 characters>
    secret: <40 Z85 characters>

Lines starting with ``#`` and blank lines are ignored. central writes them
(``skerry sites enroll --write-secret``) and both daemons read them with
:func:`read_key_file`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

KEY_CHARS = 40  # Z85 of a 32-byte CURVE key


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class KeyPair:
    public: str
    secret: str


def z85_key_problem(text: object) -> str | None:
    """Why ``text`` is not a Z85-encoded 32-byte CURVE key, or None if it is one."""
    if not isinstance(text, str):
        return "must be a string"
    if len(text) != KEY_CHARS:
        return f"must be {KEY_CHARS} Z85 characters, got {len(text)}"
    try:
        raw = z85.decode(text.encode("ascii"))
    except Exception:  # bad alphabet (KeyError), a group over 2**32 (struct.error), ...
        return "is not valid Z85"
    if len(raw) != 32:
        return "does not decode to 32 bytes"
    return None


def fingerprint(key: str | bytes | None) -> str:
    """A short, loggable name for a public key (its first 8 Z85 characters)."""
    if key is None:
        return "-"
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    return text[:8]


def parse_key_file(text: str, where: str) -> KeyPair:
    """The key pair in a key file's ``text``; KeyFileError names ``where`` and the problem."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or name not in ("public", "secret"):
            raise KeyFileError(f"{where}: line {number}: expected 'public: <z85>' or 'secret: …'")
        if name in values:
            raise KeyFileError(f"{where}: line {number}: {name!r} given twice")
        problem = z85_key_problem(value)
        if problem:
            raise KeyFileError(f"{where}: line {number}: the {name} key {problem}")
        values[name] = value
    for name in ("public", "secret"):
        if name not in values:
            raise KeyFileError(f"{where}: no '{name}:' line")
    derived = zmq.curve_public(values["secret"].encode()).decode()
    if derived != values["public"]:
        raise KeyFileError(f"{where}: the public key does not belong to the secret key")
    return KeyPair(values["public"], values["secret"])


def read_key_file(path: Path) -> KeyPair:
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyFileError(f"{path}: not a text key file") from None
    return parse_key_file(text, str(path))


def key_file_text(pair: KeyPair) -> str:
    return (
        "# Skerry CURVE key pair (Z85). Keep this file secret (mode 0600).\n"
        f"public: {pair.public}\nsecret: {pair.secret}\n"
    )


def new_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public.decode("ascii"), secret.decode("ascii"))


def write_key_file(path: Path, pair: KeyPair) -> None:
    """Write a new key file, created 0600 (never chmod-ed after); refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_file_text(pair))
        f.flush()
        os.fsync(f.fileno())
