"""Groups and policies of one flavour, checked against its nodes: scaling aspects and
their VDU deltas, initial deltas, instantiation levels, anti-affinity."""

from __future__ import annotations

from typing import Any, cast

from central.vnfd import types as t
from central.vnfd.errors import At
from central.vnfd.model import (
    AffinityScope,
    AntiAffinityRule,
    Flavour,
    InstantiationLevel,
    ScalingAspect,
)
from central.vnfd.nodes import MAX_INSTANCES
from central.vnfd.reader import Reader
from central.vnfd.source_view import kind, line_in
from central.vnfd.yamlmarks import Map

SCOPES = ("nfvi_node", "zone", "zone_group", "nfvi_pop")


class PolicyReader(Reader):
    def __init__(
        self, problems: Any, types: t.TypeTable, flavour: Flavour, broken: set[str]
    ) -> None:
        super().__init__(problems)
        self.broken = broken  # VDUs defined but not valid: references to them stay quiet
        self.types = types
        self.f = flavour
        self.groups: dict[str, list[str]] = {}

    # -- groups -----------------------------------------------------------------------

    def read_groups(self, groups: Map, at: At) -> None:
        for name, g in groups.items():
            gat = at.key(name, line_in(groups, name))
            m = self.mapping(g, gat, "a group {type, members}")
            if m is None:
                continue
            gtype = self.string(m, "type", gat, required=True)
            if gtype is None:
                continue
            if self.types.base(gtype) != t.PLACEMENT_GROUP:
                self.unsupported(gat.key("type", line_in(m, "type")), f"group type {gtype}")
                continue
            self.only_keys(
                m, gat, ("type", "members"), ("description", "properties", "metadata"), "group key"
            )
            value, mat = self.child(m, "members", gat)
            members = self.names(value, mat)
            if members is None:
                continue
            for i, member in enumerate(members):
                if member not in self.f.vdus and member not in self.broken:
                    self.error(
                        mat.item(i, line_in(value, i)),
                        f"expected a Vdu.Compute of this flavour, got {member!r}",
                    )
            self.groups[name] = members

    # -- policies ---------------------------------------------------------------------

    def read_policies(self, policies: Any, at: At) -> None:
        items: list[tuple[str, Any, At]] = []
        if isinstance(policies, list):
            for i, item in enumerate(policies):
                iat = at.item(i, line_in(policies, i))
                if not isinstance(item, dict) or len(item) != 1:
                    self.error(iat, "expected one {policy name: {type, properties, targets}}")
                    continue
                ((name, body),) = item.items()
                items.append((name, body, iat.key(name, line_in(item, name))))
        elif isinstance(policies, dict):
            items = [(n, b, at.key(n, line_in(policies, n))) for n, b in policies.items()]
        else:
            self.error(at, f"expected a list of policies, got {kind(policies)}")
            return
        parsed: dict[str, list[tuple[str, Map, At]]] = {}
        for name, body, pat in items:
            m = self.mapping(body, pat, "a policy {type, properties, targets}")
            if m is None:
                continue
            ptype = self.string(m, "type", pat, required=True)
            if ptype is None:
                continue
            base = self.types.base(ptype)
            tat = pat.key("type", line_in(m, "type"))
            if base in t.INFORMATIONAL_POLICIES:
                continue  # virtual link bitrates: see docs/vnfd.md
            if base not in t.SUPPORTED_POLICIES:
                self.unsupported(tat, f"policy type {ptype}")
                continue
            self.only_keys(
                m, pat, ("type", "properties", "targets"), ("description", "metadata"), "policy key"
            )
            parsed.setdefault(base, []).append((name, m, pat))
        # Order matters: aspects before deltas, levels before VDU levels.
        for _name, m, pat in parsed.get(t.SCALING_ASPECTS, []):
            self.aspects(m, pat)
        for _name, m, pat in parsed.get(t.VDU_INITIAL_DELTA, []):
            self.initial_delta(m, pat)
        for _name, m, pat in parsed.get(t.VDU_SCALING_DELTAS, []):
            self.scaling_deltas(m, pat)
        levels = parsed.get(t.INSTANTIATION_LEVELS, [])
        for i, (_name, m, pat) in enumerate(levels):
            if i:
                self.error(pat, "a second InstantiationLevels policy in the flavour")
                continue
            self.levels(m, pat)
        for _name, m, pat in parsed.get(t.VDU_INSTANTIATION_LEVELS, []):
            self.vdu_levels(m, pat)
        for name, m, pat in parsed.get(t.ANTI_AFFINITY, []):
            self.anti_affinity(name, m, pat)
        self.check_aspect_bounds(parsed.get(t.VDU_SCALING_DELTAS, []))

    def props(self, m: Map, at: At) -> tuple[Map | None, At]:
        return self.get_map(m, "properties", at, required=True)

    def vdu_targets(self, m: Map, at: At, groups: bool = False) -> list[str] | None:
        value, tat = self.child(m, "targets", at)
        if value is None:
            self.error(tat, "missing: expected a list of Vdu.Compute names")
            return None
        names = self.names(value, tat)
        if names is None:
            return None
        out: list[str] = []
        for i, name in enumerate(names):
            if name in self.f.vdus:
                out.append(name)
            elif name in self.broken:
                return None
            elif groups and name in self.groups:
                out += [v for v in self.groups[name] if v in self.f.vdus]
            else:
                what = "a Vdu.Compute or PlacementGroup" if groups else "a Vdu.Compute"
                self.error(
                    tat.item(i, line_in(value, i)), f"expected {what} of this flavour, got {name!r}"
                )
                return None
        if not out:
            self.error(tat, "expected at least one target")
            return None
        return out

    def aspects(self, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        if props is None:
            return
        self.only_keys(props, pat, ("aspects",), (), "ScalingAspects property")
        aspects, aat = self.get_map(props, "aspects", pat, required=True)
        for aid, body in (aspects or {}).items():
            sat = aat.key(aid, line_in(aspects, aid))
            a = self.mapping(body, sat, "a scaling aspect {name, max_scale_level, step_deltas}")
            if a is None:
                continue
            if aid in self.f.aspects:
                self.error(sat, "scaling aspect defined twice")
                continue
            self.only_keys(
                a,
                sat,
                ("name", "description", "max_scale_level", "step_deltas"),
                (),
                "scaling aspect property",
            )
            name = self.string(a, "name", sat) or aid
            description = self.string(a, "description", sat) or ""
            top = self.integer(a, "max_scale_level", sat, True, 1, MAX_INSTANCES)
            value, dat = self.child(a, "step_deltas", sat)
            if value is None:
                self.error(dat, "missing: expected a list of the step deltas' ids")
                continue
            steps = self.names(value, dat)
            if top is None or steps is None:
                continue
            if len(steps) not in (1, top):
                self.error(
                    dat,
                    f"expected 1 step delta (uniform) or max_scale_level ({top}), got {len(steps)}",
                )
                continue
            self.f.aspects[aid] = ScalingAspect(aid, name, description, top, tuple(steps), {})

    def initial_delta(self, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        targets = self.vdu_targets(m, at)
        if props is None or targets is None:
            return
        self.only_keys(props, pat, ("initial_delta",), (), "VduInitialDelta property")
        delta, dat = self.get_map(props, "initial_delta", pat, required=True)
        if delta is None:
            return
        n = self.integer(delta, "number_of_instances", dat, True, 0, MAX_INSTANCES)
        if n is None:
            return
        nat = dat.key("number_of_instances", line_in(delta, "number_of_instances"))
        for vdu in targets:
            v = self.f.vdus[vdu]
            if vdu in self.f.initial_deltas:
                self.error(at, f"a second VduInitialDelta for {vdu}")
            elif not v.min_instances <= n <= v.max_instances:
                self.error(
                    nat,
                    f"expected {v.min_instances} to {v.max_instances} instances "
                    f"(the vdu_profile of {vdu}), got {n}",
                )
            else:
                self.f.initial_deltas[vdu] = n

    def scaling_deltas(self, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        targets = self.vdu_targets(m, at)
        if props is None or targets is None:
            return
        self.only_keys(props, pat, ("aspect", "deltas"), (), "VduScalingAspectDeltas property")
        aid = self.string(props, "aspect", pat, required=True)
        deltas, dat = self.get_map(props, "deltas", pat, required=True)
        if aid is None or deltas is None:
            return
        aspect = self.f.aspects.get(aid)
        if aspect is None:
            self.error(
                pat.key("aspect", line_in(props, "aspect")),
                f"expected a scaling aspect of this flavour, got {aid!r}",
            )
            return
        for did, body in deltas.items():
            iat = dat.key(did, line_in(deltas, did))
            if aspect.step_deltas and did not in aspect.step_deltas:
                self.error(
                    iat,
                    f"expected a step delta of aspect {aid} "
                    f"({', '.join(aspect.step_deltas)}), got {did!r}",
                )
                continue
            d = self.mapping(body, iat, "{number_of_instances: N}")
            if d is None:
                continue
            n = self.integer(d, "number_of_instances", iat, True, 0, MAX_INSTANCES)
            if n is None:
                continue
            per_vdu = aspect.deltas.setdefault(did, {})
            for vdu in targets:
                if vdu in per_vdu:
                    self.error(iat, f"a second delta {did} of aspect {aid} for {vdu}")
                per_vdu[vdu] = n
        for step in aspect.step_deltas:
            if step not in deltas:
                self.error(dat, f"expected a delta for step delta {step!r} of aspect {aid}")

    def check_aspect_bounds(self, policies: list[tuple[str, Map, At]]) -> None:
        """Scaling every aspect to its max_scale_level stays within each VDU's maximum."""
        where = {}
        for _, m, pat in policies:
            props = m.get("properties")
            aid = props.get("aspect") if isinstance(props, dict) else None
            if isinstance(aid, str):
                where.setdefault(aid, pat)
        for vdu_name, vdu in self.f.vdus.items():
            base = self.f.initial_deltas.get(vdu_name, vdu.min_instances)
            for aid, aspect in self.f.aspects.items():
                added = aspect.instances_added(vdu_name, 0, aspect.max_scale_level)
                if added and base + added > vdu.max_instances:
                    self.error(
                        where.get(aid, At(self.f.file)),
                        f"scaling aspect {aid} to max_scale_level {aspect.max_scale_level} "
                        f"gives {vdu_name} {base + added} instances, above its "
                        f"max_number_of_instances {vdu.max_instances}",
                    )

    def levels(self, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        if props is None:
            return
        self.only_keys(props, pat, ("levels", "default_level"), (), "InstantiationLevels property")
        levels, lat = self.get_map(props, "levels", pat, required=True)
        for lid, body in (levels or {}).items():
            iat = lat.key(lid, line_in(levels, lid))
            lv = self.mapping(body, iat, "a level {description, scale_info}")
            if lv is None:
                continue
            self.only_keys(lv, iat, ("description", "scale_info"), (), "instantiation level key")
            description = self.string(lv, "description", iat) or ""
            scale: dict[str, int] = {}
            info, sat = self.get_map(lv, "scale_info", iat)
            for aid, sbody in (info or {}).items():
                aat = sat.key(aid, line_in(info, aid))
                aspect = self.f.aspects.get(aid)
                if aspect is None:
                    self.error(aat, f"expected a scaling aspect of this flavour, got {aid!r}")
                    continue
                s = self.mapping(sbody, aat, "{scale_level: N}")
                if s is None:
                    continue
                n = self.integer(s, "scale_level", aat, True, 0, aspect.max_scale_level)
                if n is not None:
                    scale[aid] = n
            self.f.levels[lid] = InstantiationLevel(lid, description, scale, {})
        default = self.string(props, "default_level", pat)
        if default is not None and default not in self.f.levels:
            self.error(
                pat.key("default_level", line_in(props, "default_level")),
                f"expected one of the levels ({', '.join(self.f.levels)}), got {default!r}",
            )
            default = None
        self.f.default_level = default or next(iter(self.f.levels), None)

    def vdu_levels(self, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        targets = self.vdu_targets(m, at)
        if props is None or targets is None:
            return
        self.only_keys(props, pat, ("levels",), (), "VduInstantiationLevels property")
        levels, lat = self.get_map(props, "levels", pat, required=True)
        for lid, body in (levels or {}).items():
            iat = lat.key(lid, line_in(levels, lid))
            level = self.f.levels.get(lid)
            if level is None:
                self.error(
                    iat, f"expected a level of the flavour's InstantiationLevels, got {lid!r}"
                )
                continue
            d = self.mapping(body, iat, "{number_of_instances: N}")
            if d is None:
                continue
            n = self.integer(d, "number_of_instances", iat, True, 0, MAX_INSTANCES)
            if n is None:
                continue
            for vdu in targets:
                v = self.f.vdus[vdu]
                if not v.min_instances <= n <= v.max_instances:
                    self.error(
                        iat.key("number_of_instances"),
                        f"expected {v.min_instances} to {v.max_instances} instances "
                        f"(the vdu_profile of {vdu}), got {n}",
                    )
                else:
                    level.vdu_instances[vdu] = n

    def anti_affinity(self, name: str, m: Map, at: At) -> None:
        props, pat = self.props(m, at)
        targets = self.vdu_targets(m, at, groups=True)
        if props is None or targets is None:
            return
        self.only_keys(props, pat, ("scope",), (), "AntiAffinityRule property")
        scope = self.choice(props, "scope", pat, SCOPES, required=True)
        if scope is not None:
            vdus = tuple(dict.fromkeys(targets))
            self.f.anti_affinity.append(AntiAffinityRule(name, vdus, cast(AffinityScope, scope)))
