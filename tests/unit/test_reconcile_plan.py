"""edged.reconcile.plan: the pure part of reconciling."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping

from edged.drivers.compute import ObservedServer, ServerSpec
from edged.reconcile import (
    ORDER,
    Action,
    PowerOverride,
    apply_overrides,
    plan,
    specs_from_document,
)
from tests.unit.compute_support import spec


def seen(s: ServerSpec, state: str = "running", build: str | None = None) -> ObservedServer:
    return ObservedServer(s.id, state, build or s.build_hash())  # type: ignore[arg-type]


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.server_id) for a in actions]


def test_empty_creates_all() -> None:
    desired = [spec("b"), spec("a"), spec("c", power="stopped")]
    actions = plan(desired, {})
    assert sorted(kinds(actions)) == [("create", "a"), ("create", "b"), ("create", "c")]
    by_id = {a.server_id: a.spec for a in actions}
    assert by_id == {s.id: s for s in desired}


def test_nothing_to_do() -> None:
    a, b = spec("a"), spec("b", power="stopped")
    assert plan([a, b], {"a": seen(a), "b": seen(b, "shutoff")}) == []
    assert plan([], {}) == []


def test_running_desired_shutoff_observed_starts() -> None:
    a = spec("a")
    for state in ("shutoff", "crashed", "paused", "other"):
        actions = plan([a], {"a": seen(a, state)})
        assert kinds(actions) == [("start", "a")], state
        assert actions[0].spec == a


def test_stopped_desired_running_observed_stops() -> None:
    a = spec("a", power="stopped")
    for state in ("running", "paused"):
        assert kinds(plan([a], {"a": seen(a, state)})) == [("stop", "a")]
    for state in ("shutoff", "crashed", "other"):
        assert plan([a], {"a": seen(a, state)}) == []


def test_undesired_observed_deleted() -> None:
    a, x = spec("a"), spec("x")
    actions = plan([a], {"a": seen(a), "x": seen(x)})
    assert kinds(actions) == [("delete", "x")]
    assert actions[0].spec is None
    assert kinds(plan([], {"x": seen(x, "shutoff")})) == [("delete", "x")]


def test_leftovers_not_desired_deleted() -> None:
    a = spec("a")
    actions = plan([a], {"a": seen(a)}, leftovers=["half", "orphan"])
    assert kinds(actions) == [("delete", "half"), ("delete", "orphan")]


def test_desired_leftover_is_created_not_deleted() -> None:
    a = spec("a")
    assert kinds(plan([a], {}, leftovers={"a"})) == [("create", "a")]


def test_undesired_both_observed_and_leftover_deleted_once() -> None:
    x = spec("x")
    assert kinds(plan([], {"x": seen(x)}, leftovers={"x"})) == [("delete", "x")]


def test_changed_build_hash_rebuilds() -> None:
    old, new = spec("a"), spec("a", ram_mb=256)
    assert old.build_hash() != new.build_hash()
    actions = plan([new], {"a": seen(old)})
    assert kinds(actions) == [("delete", "a"), ("create", "a")]
    assert actions[1].spec == new


def test_power_change_is_not_a_rebuild() -> None:
    assert spec("a").build_hash() == spec("a", power="stopped").build_hash()


def test_permanent_failure_not_retried_for_same_build() -> None:
    a = spec("a", image="missing")
    assert plan([a], {}, failed_builds={"a": a.build_hash()}) == []
    # Failed for an older spec: the changed spec is tried.
    fixed = spec("a")
    assert kinds(plan([fixed], {}, failed_builds={"a": a.build_hash()})) == [("create", "a")]
    # A failure recorded for another server does not block this one.
    assert kinds(plan([a], {}, failed_builds={"b": a.build_hash()})) == [("create", "a")]


def test_order_deletes_creates_power() -> None:
    desired = [
        spec("a"),  # observed shutoff -> start
        spec("b", power="stopped"),  # observed running -> stop
        spec("c"),  # missing -> create
        spec("d", vcpus=2),  # other build -> delete + create
    ]
    observed = {
        "a": seen(desired[0], "shutoff"),
        "b": seen(desired[1], "running"),
        "d": seen(spec("d")),
        "z": seen(spec("z")),
    }
    actions = plan(desired, observed, leftovers={"y"})
    ranks = [ORDER[a.kind] for a in actions]
    assert ranks == sorted(ranks)
    assert sorted(kinds(actions)) == sorted(
        [
            ("delete", "d"),
            ("delete", "y"),
            ("delete", "z"),
            ("create", "c"),
            ("create", "d"),
            ("start", "a"),
            ("stop", "b"),
        ]
    )
    assert [a.kind for a in actions][:3] == ["delete"] * 3


def test_specs_from_document() -> None:
    assert specs_from_document(None) == []
    assert specs_from_document({}) == []
    doc = {
        "servers": [
            {"id": "a", "name": "n", "vcpus": "2", "ram_mb": 64, "disk_gb": 1, "image": "i"},
            {
                "id": "b",
                "name": "m",
                "vcpus": 1,
                "ram_mb": 64,
                "disk_gb": 1,
                "image": "i",
                "power": "stopped",
            },
        ]
    }
    a, b = specs_from_document(doc)
    assert a == ServerSpec("a", "n", 2, 64, 1, "i", "running")
    assert b.power == "stopped"


# -- idempotence: applying a plan converges ----------------------------------------


def simulate(
    actions: Iterable[Action], observed: Mapping[str, ObservedServer], leftovers: Iterable[str]
) -> tuple[dict[str, ObservedServer], set[str]]:
    """What a perfect driver leaves behind after the actions."""
    obs = dict(observed)
    left = set(leftovers)
    for action in actions:
        sid = action.server_id
        if action.kind == "delete":
            obs.pop(sid, None)
            left.discard(sid)
        elif action.kind == "create":
            assert action.spec is not None
            assert sid not in obs, f"create over an existing domain {sid}"
            state = "running" if action.spec.power == "running" else "shutoff"
            obs[sid] = ObservedServer(sid, state, action.spec.build_hash())
            left.discard(sid)
        elif action.kind == "start":
            assert sid in obs
            obs[sid] = ObservedServer(sid, "running", obs[sid].build_hash)
        elif action.kind == "stop":
            assert sid in obs
            obs[sid] = ObservedServer(sid, "shutoff", obs[sid].build_hash)
    return obs, left


def random_case(rng: random.Random):
    ids = [f"s{i}" for i in range(rng.randint(0, 8))]
    desired = []
    for sid in ids:
        if rng.random() < 0.6:
            desired.append(
                spec(
                    sid,
                    vcpus=rng.choice([1, 2]),
                    image=rng.choice(["tiny", "big"]),
                    power=rng.choice(["running", "stopped"]),
                )
            )
    observed = {}
    for sid in ids:
        if rng.random() < 0.6:
            build = spec(sid, vcpus=rng.choice([1, 2]), image=rng.choice(["tiny", "big"]))
            state = rng.choice(["running", "shutoff", "crashed", "paused", "other"])
            observed[sid] = seen(build, state)
    leftovers = {sid for sid in ids if sid not in observed and rng.random() < 0.3}
    failed = {}
    for s in desired:
        if rng.random() < 0.2:
            failed[s.id] = s.build_hash() if rng.random() < 0.5 else "stale-hash"
    return desired, observed, leftovers, failed


def test_plan_applied_converges() -> None:
    rng = random.Random(1)
    nonempty = 0
    for _ in range(400):
        desired, observed, leftovers, failed = random_case(rng)
        actions = plan(desired, observed, leftovers, failed)
        nonempty += bool(actions)
        ranks = [ORDER[a.kind] for a in actions]
        assert ranks == sorted(ranks)
        assert len(set(kinds(actions))) == len(actions), "duplicate action"
        obs, left = simulate(actions, observed, leftovers)
        assert plan(desired, obs, left, failed) == [], (desired, observed, leftovers, failed)
        # End state: only desired servers (or blocked by a failure), right build and power.
        wanted = {s.id: s for s in desired}
        assert set(obs) <= set(wanted)
        assert not (left - set(wanted))
        for sid, s in wanted.items():
            if sid in obs:
                assert obs[sid].build_hash == s.build_hash()
                if s.power == "running":
                    assert obs[sid].state == "running"
                else:
                    assert obs[sid].state not in ("running", "paused")
            else:
                assert failed.get(sid) == s.build_hash()
    assert nonempty > 200


# -- local power overrides (apply_overrides) ------------------------------------------


def override(server_id: str, power: str, generation: int, against: str) -> PowerOverride:
    return PowerOverride(server_id, power, generation, against)  # type: ignore[arg-type]


def test_override_applies_over_the_document() -> None:
    a, b = spec("a"), spec("b")
    effective, stale = apply_overrides([a, b], [override("a", "stopped", 3, "running")], 3)
    assert [(s.id, s.power) for s in effective] == [("a", "stopped"), ("b", "running")]
    assert stale == []
    # the build does not change: a power override never rebuilds a domain
    assert effective[0].build_hash() == a.build_hash()
    assert kinds(plan(effective, {"a": seen(a), "b": seen(b)})) == [("stop", "a")]


def test_override_holds_while_central_keeps_that_power() -> None:
    a = spec("a")
    effective, stale = apply_overrides([a], [override("a", "stopped", 3, "running")], 9)
    assert [s.power for s in effective] == ["stopped"]
    assert stale == []


def test_override_ends_when_central_changes_that_power() -> None:
    a = spec("a", power="stopped")
    effective, stale = apply_overrides([a], [override("a", "running", 3, "running")], 4)
    assert [s.power for s in effective] == ["stopped"]
    assert stale == ["a"]


def test_override_ends_when_server_leaves() -> None:
    effective, stale = apply_overrides([spec("b")], [override("a", "stopped", 3, "running")], 4)
    assert [s.id for s in effective] == ["b"]
    assert stale == ["a"]


def test_no_overrides_is_identity() -> None:
    desired = [spec("a"), spec("b", power="stopped")]
    assert apply_overrides(desired, [], 1) == (desired, [])


def test_servers_whose_image_is_not_ready_wait() -> None:
    a, b = spec("a", image="img-1", image_sha256="f" * 64), spec("b")
    # a's image is not cached/verified: no create; a running a is kept as it is.
    assert kinds(plan([a, b], {}, unbootable={"a"})) == [("create", "b")]
    assert plan([a], {"a": seen(a)}, unbootable={"a"}) == []


def test_documents_mark_central_images_by_their_sha256() -> None:
    doc = {
        "servers": [
            {"id": "a", "name": "a", "vcpus": 1, "ram_mb": 64, "disk_gb": 1, "image": "img-1"},
            {"id": "b", "name": "b", "vcpus": 1, "ram_mb": 64, "disk_gb": 1, "image": "tiny"},
        ],
        "images": [{"id": "img-1", "sha256": "e" * 64}, "junk"],
    }
    a, b = specs_from_document(doc)
    assert (a.image_sha256, b.image_sha256) == ("e" * 64, "")
    # A kernel-image server's build hash does not change with the new field.
    assert b.build_hash() == spec("b", name="b", ram_mb=64).build_hash()
