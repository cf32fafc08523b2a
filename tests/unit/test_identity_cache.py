"""edged.identity.IdentityCache: the snapshot a site validates tokens against, offline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.identity import IdentityCache
from edged.state import LocalState
from edged.tokens import TokenError, issue, public_key_text

KEY = Ed25519PrivateKey.generate()


def identity(**users: list[str]) -> dict[str, Any]:
    """A section with project p1 where each given user holds the given roles."""
    return {
        "issuer": "skerry",
        "admin_project": "p-admin",
        "keys": {"k1": public_key_text(KEY)},
        "projects": {"p1": {"name": "one", "enabled": True}},
        "users": {u: {"name": u, "enabled": True} for u in users},
        "assignments": {u: {"p1": roles} for u, roles in users.items()},
        "revoked_tokens": {},
        "revoked_before": {},
    }


def token(user: str, roles: tuple[str, ...] = ("member",)) -> str:
    return issue(
        KEY,
        "k1",
        issuer="skerry",
        user_id=user,
        user_name=user,
        project_id="p1",
        roles=roles,
        ttl_s=600,
    )[0]


def reason(cache: IdentityCache, tok: str) -> str:
    with pytest.raises(TokenError) as err:
        cache.validate(tok)
    return err.value.reason


def test_empty_cache_refuses_everything() -> None:
    cache = IdentityCache()
    assert cache.generation == 0
    assert reason(cache, token("alice")) == "unknown_key"
    assert cache.counters["refused_unknown_key"] == 1


def test_load_and_validate() -> None:
    cache = IdentityCache()
    assert cache.load(3, {"servers": [], "identity": identity(alice=["member"])})
    who = cache.validate(token("alice"))
    assert (who.user_id, who.project_id, who.roles) == ("alice", "p1", {"member"})
    assert cache.generation == 3
    assert cache.stats()["users"] == 1
    assert cache.counters["accepted"] == 1


def test_new_document_replaces_snapshot() -> None:
    cache = IdentityCache()
    cache.load(1, {"identity": identity(alice=["member"])})
    tok = token("alice")
    cache.validate(tok)
    # central removed alice's role: the same token is refused from the next document on.
    cache.load(2, {"identity": identity(alice=[], bob=["reader"])})
    assert reason(cache, tok) == "no_role"
    assert cache.validate(token("bob", ("reader",))).roles == {"reader"}


@pytest.mark.parametrize(
    "bad",
    [
        "not a mapping",
        ["list"],
        {"keys": {"k1": "%%%"}},
        {"users": {"alice": {"enabled": "yes"}}},
        {"assignments": {"alice": {"p1": "member"}}},
        {"revoked_tokens": {"j": "x"}},
    ],
)
def test_malformed_section_keeps_previous_snapshot(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cache = IdentityCache()
    cache.load(1, {"identity": identity(alice=["member"])})
    before = cache.snapshot
    with caplog.at_level(logging.ERROR, logger="edged.identity"):
        assert cache.load(2, {"identity": bad}) is False
    assert cache.snapshot is before
    assert cache.generation == 1
    assert cache.counters["snapshot_malformed"] == 1
    assert "malformed" in caplog.text
    assert cache.validate(token("alice")).user_id == "alice"


def test_document_without_identity_fails_closed() -> None:
    cache = IdentityCache()
    cache.load(1, {"identity": identity(alice=["member"])})
    assert cache.load(2, {"servers": []})
    assert reason(cache, token("alice")) == "unknown_key"
    assert cache.counters["snapshot_absent"] == 1


def test_unexpected_failure_is_still_a_token_error() -> None:
    cache = IdentityCache()
    cache.load(1, {"identity": identity(alice=["member"])})
    cache.snapshot.keys = None  # type: ignore[assignment] - a bug deep down
    assert reason(cache, token("alice")) == "malformed"


def test_built_from_the_persisted_document(tmp_path: Path) -> None:
    """At start, before central says anything, the held document authorises."""
    state = LocalState(tmp_path)
    state.accept(7, {"servers": [], "identity": identity(alice=["admin"])})
    state.close()

    state = LocalState(tmp_path)
    cache = IdentityCache()
    cache.load(state.generation, state.document())
    assert cache.generation == 7
    assert cache.validate(token("alice", ("admin",))).roles == {"admin"}
    state.close()
