"""Offline token validation at a site against the bare Ed25519 signature check.

Prints::

    RESULT token_verify per_s=X raw_per_s=Y ratio=X/Y

* **per_s**: full validations a second through ``IdentityCache.validate`` (what
  the local API does per request): JWS parse, header and ``kid`` look-up, the
  EdDSA signature, claims, expiry, the revoked-jti set, user and project
  state, per-user/project revocation cut-offs and the role look-up, against a
  realistic snapshot (``--users`` 1,000, ``--projects`` 100, ``--revoked``
  1,000 revoked jtis, 3 signing keys). Every token is distinct and validated
  afresh (no result caching).
* **raw_per_s**: bare ``Ed25519PublicKey.verify(signature, signing_input)``
  with cryptography (what PyJWT calls underneath) over the same tokens'
  signatures, in the same run.

Each is measured for ``--seconds`` (2 s) after a short warm-up, on one core.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.identity import IdentityCache
from edged.tokens import issue, public_key_text, unb64url


def build(users: int, projects: int, revoked: int, tokens: int) -> tuple[IdentityCache, list[str]]:
    rng = random.Random(42)
    keys = {f"k{i}": Ed25519PrivateKey.generate() for i in range(3)}
    now = time.time()
    project_ids = [f"p{i:04d}" for i in range(projects)]
    user_ids = [f"u{i:05d}" for i in range(users)]
    assignments = {
        u: {p: [rng.choice(["reader", "member", "admin"])] for p in rng.sample(project_ids, 3)}
        for u in user_ids
    }
    section = {
        "issuer": "skerry",
        "admin_project": project_ids[0],
        "keys": {kid: public_key_text(k) for kid, k in keys.items()},
        "projects": {p: {"name": p, "enabled": True} for p in project_ids},
        "users": {u: {"name": u, "enabled": True} for u in user_ids},
        "assignments": assignments,
        "revoked_tokens": {f"{i:032x}": now + 3600 for i in range(revoked)},
        "revoked_before": {f"user:{u}": now - 7200 for u in user_ids[: users // 10]},
    }
    cache = IdentityCache()
    if not cache.load(1, {"identity": section}):
        raise SystemExit("bench snapshot refused")
    issued = []
    for _ in range(tokens):
        user = rng.choice(user_ids)
        project, roles = rng.choice(sorted(assignments[user].items()))
        kid = rng.choice(sorted(keys))
        tok, _ = issue(
            keys[kid],
            kid,
            issuer="skerry",
            user_id=user,
            user_name=user,
            project_id=project,
            roles=roles,
            ttl_s=3600,
            now=now - 60,
        )
        issued.append(tok)
    return cache, issued


def rate(fn: Callable[[int], None], n: int, seconds: float) -> float:
    """Calls of ``fn(i)`` a second, cycling i over range(n), for about ``seconds``."""
    for i in range(min(n, 200)):  # warm-up
        fn(i)
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for i in range(n):
            fn(i)
        done += n
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--revoked", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=2000, help="distinct valid tokens")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)

    cache, tokens = build(args.users, args.projects, args.revoked, args.tokens)
    keys = cache.snapshot.keys
    raw: list[tuple[object, bytes, bytes]] = []
    for tok in tokens:
        head, body, sig = tok.split(".")
        kid = json.loads(unb64url(head))["kid"]
        raw.append((keys[kid], unb64url(sig), f"{head}.{body}".encode()))
    for tok in tokens:  # every one of them is valid: nothing is measured on a refusal path
        cache.validate(tok)

    def full(i: int) -> None:
        cache.validate(tokens[i])

    def bare(i: int) -> None:
        key, sig, data = raw[i]
        key.verify(sig, data)  # type: ignore[attr-defined]

    per_s = rate(full, len(tokens), args.seconds)
    raw_per_s = rate(bare, len(raw), args.seconds)
    print(
        f"snapshot: {args.users} users, {args.projects} projects, {args.revoked} revoked jtis; "
        f"{len(tokens)} distinct tokens"
    )
    print(
        f"RESULT token_verify per_s={per_s:.0f} raw_per_s={raw_per_s:.0f} "
        f"ratio={per_s / raw_per_s:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
