"""Node templates of one topology: VNF, Vdu.Compute, Vdu.VirtualBlockStorage, VduCp and
VnfVirtualLink read into their model records plus the references still to check."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, cast

from central.vnfd import types as t
from central.vnfd.errors import At
from central.vnfd.model import (
    BlockStorage,
    CpuPolicy,
    MemPageSize,
    SwImage,
    VirtualLink,
    VnicType,
)
from central.vnfd.reader import Reader
from central.vnfd.source_view import kind, line_in
from central.vnfd.units import GIB, MIB
from central.vnfd.yamlmarks import Map

NODE_KEYS = ("type", "properties", "capabilities", "requirements", "artifacts", "interfaces")
NODE_INFO = ("description", "metadata", "attributes")
DISK_FORMATS = ("qcow2", "raw")
SOL_DISK_FORMATS = ("aki", "ami", "ari", "iso", "vdi", "vhd", "vhdx", "vmdk")
VNIC_TYPES: dict[str, VnicType] = {"normal": "normal", "direct": "direct"}
VNIC_UNSUPPORTED = {
    "direct-physical": "a whole physical NIC passed through; Skerry's direct ports are "
    "SR-IOV VFs (vnic_type direct)",
    "macvtap": "macvtap ports",
    "baremetal": "bare-metal ports",
    "virtio-forwarder": "virtio-forwarder ports",
    "smart-nic": "smart-NIC ports",
}
PAGE_SIZES: dict[str, MemPageSize] = {
    "small": "small",
    "4KB": "small",
    "4": "small",
    "2MB": "2MB",
    "2048": "2MB",
    "1GB": "1GB",
    "1048576": "1GB",
}
PAGE_KEYS = ("mem_page_size", "hw:mem_page_size")
NUMA_KEYS = ("numa_nodes", "hw:numa_nodes")
CPU_POLICY_KEYS = ("cpu_policy", "hw:cpu_policy")
MAX_VCPUS, MIN_RAM, MAX_RAM, MAX_DISK, MAX_NUMA = 64, 64, 262144, 4096, 8  # central's flavor
MAX_INSTANCES = 1000  # per VDU; bounds every count and scale level read


@dataclass
class VduDraft:
    """A Vdu.Compute before its storages are resolved."""

    name: str
    at: At
    display_name: str
    description: str
    min_instances: int
    max_instances: int
    vcpus: int
    ram_mb: int
    disk_gb: int
    cpu_policy: CpuPolicy
    mem_page_size: MemPageSize
    numa_nodes: int
    image: SwImage | None
    storages: list[tuple[str, At]] = field(default_factory=list)


@dataclass
class CpDraft:
    name: str
    at: At
    vdu: tuple[str, At] | None
    vl: tuple[str, At] | None
    vnic_type: VnicType
    sol_vnic_type: str
    order: int | None


@dataclass
class VnfNode:
    """The VNF node template of a file: its properties as read (plain values)."""

    type: str
    at: At
    props: dict[str, Any]


@dataclass
class Topology:
    vnf: VnfNode | None = None
    vdus: dict[str, VduDraft] = field(default_factory=dict)
    storages: dict[str, tuple[BlockStorage, At]] = field(default_factory=dict)
    cps: dict[str, CpDraft] = field(default_factory=dict)
    vls: dict[str, VirtualLink] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)  # node name -> base type (any node)


VNF_READ = (
    "descriptor_id",
    "descriptor_version",
    "provider",
    "product_name",
    "software_version",
    "vnfm_info",
    "flavour_id",
    "flavour_description",
)
VNF_INFO = (
    "product_info_name",
    "product_info_description",
    "localization_languages",
    "default_localization_language",
    "lcm_operations_configuration",
    "vnf_profile",
    "modifiable_attributes",
    "configurable_properties",
)


class NodeReader(Reader):
    def __init__(self, problems: Any, types: t.TypeTable) -> None:
        super().__init__(problems)
        self.types = types

    def topology(self, templates: Map, at: At) -> Topology:
        topo = Topology()
        for name, node in templates.items():
            nat = at.key(name, line_in(templates, name))
            m = self.mapping(node, nat, "a node template (a mapping with 'type')")
            if m is None:
                continue
            type_name = self.string(m, "type", nat, required=True)
            if type_name is None:
                continue
            tat = nat.key("type", line_in(m, "type"))
            base = self.types.base(type_name)
            if base is None:
                self.unsupported(tat, f"node type {type_name} (not a SOL001 type Skerry knows)")
                continue
            if base in t.UNSUPPORTED_NODES:
                self.unsupported(tat, t.UNSUPPORTED_NODES[base])
                topo.kinds[name] = base
                continue
            if base not in t.SUPPORTED_NODES:
                self.unsupported(tat, f"{type_name} used as a node template")
                continue
            topo.kinds[name] = base
            self.only_keys(m, nat, NODE_KEYS, NODE_INFO, "node template key")
            if base == t.VNF:
                if topo.vnf is not None:
                    self.error(nat, f"a second VNF node (the first is {topo.vnf.at.path})")
                    continue
                topo.vnf = self.vnf(type_name, m, nat)
            elif base == t.VDU:
                vdu = self.vdu(name, m, nat)
                if vdu is not None:
                    topo.vdus[name] = vdu
            elif base == t.BLOCK_STORAGE:
                storage = self.storage(name, m, nat)
                if storage is not None:
                    topo.storages[name] = (storage, nat)
            elif base == t.VDU_CP:
                cp = self.cp(name, m, nat)
                if cp is not None:
                    topo.cps[name] = cp
            else:
                vl = self.vl(name, m, nat)
                if vl is not None:
                    topo.vls[name] = vl
        return topo

    # -- parts every node kind may have -----------------------------------------------

    def no_section(self, m: Map, key: str, at: At, feature: str) -> None:
        value = m.get(key)
        if value not in (None, [], {}):
            self.unsupported(at.key(key, line_in(m, key)), feature)

    def properties(self, m: Map, at: At, required: bool = True) -> tuple[Map | None, At]:
        props, pat = self.get_map(m, "properties", at, required)
        return props, pat

    def requirements(self, m: Map, at: At, allowed: tuple[str, ...]) -> list[tuple[str, str, At]]:
        """``requirements:`` as (requirement, target node, where); others unsupported."""
        value, rat = self.child(m, "requirements", at)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(rat, f"expected a list of {{requirement: node}}, got {kind(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            iat = rat.item(i, line_in(value, i))
            if not isinstance(item, dict) or len(item) != 1:
                self.error(iat, "expected one {requirement: node name}")
                continue
            ((req, target),) = item.items()
            qat = iat.key(req, line_in(item, req))
            if isinstance(target, dict) and isinstance(target.get("node"), str):
                target = target["node"]  # the extended form {node: NAME, ...}
            if req not in allowed:
                self.unsupported(qat, f"requirement '{req}'")
                continue
            if not isinstance(target, str):
                self.error(qat, f"expected the name of a node template, got {kind(target)}")
                continue
            out.append((req, target, qat))
        return out

    # -- VNF ---------------------------------------------------------------------------

    def vnf(self, type_name: str, m: Map, at: At) -> VnfNode:
        props, pat = self.properties(m, at, required=False)
        declared: set[str] = set()
        for tdef in self.types.chain(type_name):
            if isinstance(tdef.get("properties"), dict):
                declared |= set(tdef["properties"])
        values: dict[str, Any] = {}
        if props is not None:
            self.only_keys(props, pat, VNF_READ + VNF_INFO, declared, "VNF property")
            for key in VNF_READ:
                if key in props:
                    values[key] = props[key]
            conf, cat = self.get_map(props, "configurable_properties", pat)
            if conf is not None:
                for flag in ("is_autoscale_enabled", "is_autoheal_enabled"):
                    if conf.get(flag) is True:
                        self.unsupported(cat.key(flag, line_in(conf, flag)), f"{flag}: true")
        self.vnf_interfaces(m, at)
        artifacts = m.get("artifacts")
        if isinstance(artifacts, dict):
            aat = at.key("artifacts", line_in(m, "artifacts"))
            for name, art in artifacts.items():
                atype = art.get("type") if isinstance(art, dict) else None
                self.unsupported(
                    aat.key(name, line_in(artifacts, name)),
                    f"VNF artifact '{name}' ({atype or 'untyped'}: LCM scripts and "
                    "management drivers)",
                )
        else:
            self.no_section(m, "artifacts", at, "VNF artifacts")
        self.no_section(m, "requirements", at, "VNF requirements (virtual links at NS level)")
        self.no_section(m, "capabilities", at, "VNF capabilities")
        return VnfNode(type_name, at, values)

    def vnf_interfaces(self, m: Map, at: At) -> None:
        interfaces, iat = self.get_map(m, "interfaces", at)
        if interfaces is None:
            return
        for name, ops in interfaces.items():
            oat = iat.key(name, line_in(interfaces, name))
            if name != "Vnflcm":
                self.unsupported(oat, f"interface '{name}'")
                continue
            if ops is None:
                continue
            opmap = self.mapping(ops, oat, "a mapping of LCM operations")
            if opmap is None:
                continue
            for op, impl in opmap.items():
                if op == "type" or impl in (None, [], {}):
                    continue  # [] : Skerry's own (default) LCM for that operation
                self.unsupported(
                    oat.key(op, line_in(opmap, op)),
                    f"LCM operation script (interfaces.Vnflcm.{op})",
                )

    # -- Vdu.Compute -------------------------------------------------------------------

    def vdu(self, name: str, m: Map, at: At) -> VduDraft | None:
        ok = True
        props, pat = self.properties(m, at)
        self.no_section(m, "interfaces", at, "VDU interfaces (LCM scripts)")
        image_file = self.sw_image_artifact(m, at)
        if props is None:
            return None
        self.only_keys(
            props,
            pat,
            ("name", "description", "vdu_profile", "sw_image_data"),
            ("boot_order", "nfvi_constraints"),
            "Vdu.Compute property",
        )
        display = self.string(props, "name", pat, required=True) or name
        description = self.string(props, "description", pat) or ""
        profile, prat = self.get_map(props, "vdu_profile", pat, required=True)
        lo = hi = None
        if profile is not None:
            self.only_keys(
                profile,
                prat,
                ("min_number_of_instances", "max_number_of_instances"),
                (),
                "vdu_profile property",
            )
            lo = self.integer(profile, "min_number_of_instances", prat, True, 0, MAX_INSTANCES)
            hi = self.integer(profile, "max_number_of_instances", prat, True, 1, MAX_INSTANCES)
            if lo is not None and hi is not None and lo > hi:
                self.error(
                    prat.key(
                        "max_number_of_instances", line_in(profile, "max_number_of_instances")
                    ),
                    f"expected max_number_of_instances >= min_number_of_instances ({lo}), got {hi}",
                )
                ok = False
        image = None
        if "sw_image_data" in props:
            image = self.sw_image(props, pat, image_file)
            ok = ok and image is not None
        compute = self.virtual_compute(m, at)
        storages = [
            (target, qat) for _, target, qat in self.requirements(m, at, ("virtual_storage",))
        ]
        if compute is None or lo is None or hi is None or not ok:
            return None
        vcpus, ram_mb, disk_gb, cpu_policy, page, numa = compute
        if image is not None and disk_gb is not None and disk_gb < image.min_disk_gb:
            self.error(
                at.key("capabilities")
                .key("virtual_compute")
                .key("properties")
                .key("virtual_local_storage"),
                f"expected a root disk of at least the image's min_disk ({image.min_disk_gb} "
                f"GiB), got {disk_gb} GiB",
            )
            return None
        if disk_gb is None:
            disk_gb = max(1, image.min_disk_gb if image is not None else 1)
        return VduDraft(
            name,
            at,
            display,
            description,
            lo,
            hi,
            vcpus,
            ram_mb,
            disk_gb,
            cpu_policy,
            page,
            numa,
            image,
            storages,
        )

    def virtual_compute(
        self, m: Map, at: At
    ) -> tuple[int, int, int | None, CpuPolicy, MemPageSize, int] | None:
        caps, cat = self.get_map(m, "capabilities", at, required=True)
        if caps is None:
            return None
        self.only_keys(caps, cat, ("virtual_compute",), ("virtual_binding",), "VDU capability")
        vc, vcat = self.get_map(caps, "virtual_compute", cat, required=True)
        if vc is None:
            return None
        self.only_keys(vc, vcat, ("properties",), (), "virtual_compute key")
        props, pat = self.properties(vc, vcat)
        if props is None:
            return None
        self.only_keys(
            props,
            pat,
            ("virtual_memory", "virtual_cpu", "virtual_local_storage", "logical_node"),
            ("requested_additional_capabilities", "compute_requirements"),
            "virtual_compute property",
        )
        cpu, cpuat = self.get_map(props, "virtual_cpu", pat, required=True)
        mem, memat = self.get_map(props, "virtual_memory", pat, required=True)
        vcpus = ram_mb = None
        cpu_policy: CpuPolicy = "shared"
        page: MemPageSize = "small"
        numa: int | None = None
        if cpu is not None:
            self.only_keys(
                cpu,
                cpuat,
                ("num_virtual_cpu", "vdu_cpu_requirements", "virtual_cpu_pinning"),
                ("cpu_architecture", "virtual_cpu_clock", "virtual_cpu_oversubscription_policy"),
                "virtual_cpu property",
            )
            vcpus = self.integer(cpu, "num_virtual_cpu", cpuat, True, 1, MAX_VCPUS)
            cpu_policy = self.cpu_policy(cpu, cpuat)
        if mem is not None:
            self.only_keys(
                mem,
                memat,
                ("virtual_mem_size", "vdu_mem_requirements"),
                ("virtual_mem_oversubscription_policy", "numa_enabled"),
                "virtual_memory property",
            )
            ram_mb = self.size(mem, "virtual_mem_size", memat, MIB, required=True)
            if ram_mb is not None and not MIN_RAM <= ram_mb <= MAX_RAM:
                self.error(
                    memat.key("virtual_mem_size", line_in(mem, "virtual_mem_size")),
                    f"expected {MIN_RAM} MiB to {MAX_RAM} MiB, got {ram_mb} MiB",
                )
                ram_mb = None
            page, numa = self.mem_requirements(mem, memat)
        logical, lat = self.get_map(props, "logical_node", pat)
        if logical is not None:
            if numa is not None and numa != len(logical):
                self.error(
                    lat,
                    f"{len(logical)} logical nodes, but vdu_mem_requirements asks "
                    f"for {numa} NUMA nodes",
                )
            numa = len(logical)
        numa = numa or 1
        if vcpus is not None and not 1 <= numa <= min(MAX_NUMA, vcpus):
            self.error(
                lat if logical is not None else memat,
                f"expected 1 to {min(MAX_NUMA, vcpus)} NUMA nodes (at most one per "
                f"vCPU), got {numa}",
            )
            return None
        disk = self.local_storage(props, pat)
        if vcpus is None or ram_mb is None or disk is False:
            return None
        return vcpus, ram_mb, disk, cpu_policy, page, numa

    def cpu_policy(self, cpu: Map, at: At) -> CpuPolicy:
        policy: CpuPolicy = "shared"
        reqs, rat = self.get_map(cpu, "vdu_cpu_requirements", at)
        if reqs is not None:
            for key, value in reqs.items():
                kat = rat.key(key, line_in(reqs, key))
                if key not in CPU_POLICY_KEYS:
                    self.unsupported(kat, f"vdu_cpu_requirements '{key}'")
                elif value in ("dedicated", "shared"):
                    policy = cast(CpuPolicy, value)
                else:
                    self.error(kat, f"expected dedicated or shared, got {kind(value)}")
        pin, pinat = self.get_map(cpu, "virtual_cpu_pinning", at)
        if pin is not None:
            self.only_keys(pin, pinat, ("virtual_cpu_pinning_policy",), (), "virtual_cpu_pinning")
            value = self.choice(
                pin, "virtual_cpu_pinning_policy", pinat, ("static", "dynamic"), required=True
            )
            if value == "static":
                self.unsupported(
                    pinat.key("virtual_cpu_pinning_policy"),
                    "virtual_cpu_pinning_policy static (host CPUs chosen by rule); use dynamic",
                )
            elif value == "dynamic":
                policy = "dedicated"
        return policy

    def mem_requirements(self, mem: Map, at: At) -> tuple[MemPageSize, int | None]:
        page: MemPageSize = "small"
        numa = None
        reqs, rat = self.get_map(mem, "vdu_mem_requirements", at)
        if reqs is None:
            return page, numa
        for key, value in reqs.items():
            kat = rat.key(key, line_in(reqs, key))
            text = str(value) if isinstance(value, str | int) else None
            if key in PAGE_KEYS:
                if text not in PAGE_SIZES:
                    self.error(kat, f"expected small, 2MB or 1GB, got {kind(value)}")
                else:
                    page = PAGE_SIZES[text]
            elif key in NUMA_KEYS:
                if text is None or not text.isdigit() or int(text) < 1:
                    self.error(kat, f"expected a number of NUMA nodes >= 1, got {kind(value)}")
                else:
                    numa = int(text)
            else:
                self.unsupported(kat, f"vdu_mem_requirements '{key}'")
        return page, numa

    def local_storage(self, props: Map, at: At) -> int | bool | None:
        """The root disk in GiB; None when not given; False after an error."""
        disks, dat = self.get_list(props, "virtual_local_storage", at)
        if disks is None:
            return False if "virtual_local_storage" in props else None
        if not disks:
            return None
        if len(disks) > 1:
            self.unsupported(
                dat.item(1, line_in(disks, 1)),
                "more than one virtual_local_storage (extra local disks)",
            )
            return False
        iat = dat.item(0, line_in(disks, 0))
        disk = self.mapping(disks[0], iat, "{size_of_storage: SIZE}")
        if disk is None:
            return False
        self.only_keys(
            disk,
            iat,
            ("size_of_storage",),
            ("vdu_storage_requirements", "rdma_enabled"),
            "virtual_local_storage property",
        )
        gb = self.size(disk, "size_of_storage", iat, GIB, required=True)
        if gb is None:
            return False
        if not 1 <= gb <= MAX_DISK:
            self.error(
                iat.key("size_of_storage", line_in(disk, "size_of_storage")),
                f"expected a root disk of 1 to {MAX_DISK} GiB, got {gb} GiB",
            )
            return False
        return gb

    def sw_image_artifact(self, m: Map, at: At) -> str | None:
        """The ``sw_image`` artifact's file (relative to the package root)."""
        artifacts, aat = self.get_map(m, "artifacts", at)
        if artifacts is None:
            return None
        found = None
        for name, art in artifacts.items():
            nat = aat.key(name, line_in(artifacts, name))
            a = self.mapping(art, nat, "an artifact {type, file}")
            if a is None:
                continue
            atype = self.string(a, "type", nat, required=True)
            if atype is None:
                continue
            if atype != "tosca.artifacts.nfv.SwImage":
                self.unsupported(nat, f"artifact type {atype}")
                continue
            self.only_keys(
                a,
                nat,
                ("type", "file"),
                ("description", "deploy_path", "checksum", "checksum_algorithm", "properties"),
                "artifact key",
            )
            file = self.string(a, "file", nat, required=True)
            if file is not None:
                found = self.artifact_path(file, nat.key("file", line_in(a, "file")))
        return found

    def artifact_path(self, file: str, at: At) -> str | None:
        import posixpath

        from central.vnfd.package import inside

        base = posixpath.dirname(at.file)
        return inside(file, base, at, self.problems)

    def sw_image(self, props: Map, at: At, file: str | None) -> SwImage | None:
        data, dat = self.get_map(props, "sw_image_data", at, required=True)
        if data is None:
            return None
        self.only_keys(
            data,
            dat,
            (
                "name",
                "version",
                "checksum",
                "container_format",
                "disk_format",
                "min_disk",
                "min_ram",
                "size",
            ),
            ("operating_system", "supported_virtualisation_environments"),
            "sw_image_data property",
        )
        name = self.string(data, "name", dat, required=True)
        version = self.string(data, "version", dat)
        fmt = self.string(data, "disk_format", dat, required=True)
        fat = dat.key("disk_format", line_in(data, "disk_format"))
        if fmt is not None and fmt not in DISK_FORMATS:
            if fmt in SOL_DISK_FORMATS:
                self.unsupported(fat, f"disk_format {fmt} (Skerry boots qcow2 and raw)")
            else:
                self.error(fat, f"expected a disk format (qcow2, raw), got {fmt!r}")
            fmt = None
        container = self.string(data, "container_format", dat)
        algorithm = digest = None
        checksum, cat = self.get_map(data, "checksum", dat)
        if checksum is not None:
            self.only_keys(checksum, cat, ("algorithm", "hash"), (), "checksum property")
            algorithm = self.string(checksum, "algorithm", cat, required=True)
            digest = self.string(checksum, "hash", cat, required=True)
        min_disk = self.size(data, "min_disk", dat, GIB)
        min_ram = self.size(data, "min_ram", dat, MIB)
        size = self.size_bytes(data, "size", dat)
        if name is None or fmt is None:
            return None
        return SwImage(
            name,
            version,
            fmt,
            container,
            algorithm,
            digest,
            min_disk or 0,
            min_ram or 0,
            size,
            file,
        )

    # -- Vdu.VirtualBlockStorage ------------------------------------------------------

    def storage(self, name: str, m: Map, at: At) -> BlockStorage | None:
        props, pat = self.properties(m, at)
        self.no_section(m, "requirements", at, "VirtualBlockStorage requirements")
        self.no_section(m, "interfaces", at, "VirtualBlockStorage interfaces")
        file = self.sw_image_artifact(m, at)
        if props is None:
            return None
        self.only_keys(
            props,
            pat,
            ("virtual_block_storage_data", "sw_image_data"),
            (),
            "VirtualBlockStorage property",
        )
        data, dat = self.get_map(props, "virtual_block_storage_data", pat, required=True)
        size = None
        if data is not None:
            self.only_keys(
                data,
                dat,
                ("size_of_storage",),
                ("vdu_storage_requirements", "rdma_enabled"),
                "virtual_block_storage_data property",
            )
            size = self.size(data, "size_of_storage", dat, GIB, required=True)
            if size is not None and not 1 <= size <= MAX_DISK:
                self.error(
                    dat.key("size_of_storage", line_in(data, "size_of_storage")),
                    f"expected 1 to {MAX_DISK} GiB, got {size} GiB",
                )
                size = None
        image = None
        if "sw_image_data" in props:
            image = self.sw_image(props, pat, file)
            if image is None:
                return None
        if size is None:
            return None
        return BlockStorage(name, size, image)

    # -- VduCp ------------------------------------------------------------------------

    def cp(self, name: str, m: Map, at: At) -> CpDraft | None:
        props, pat = self.properties(m, at, required=False)
        self.no_section(m, "interfaces", at, "VduCp interfaces")
        self.no_section(m, "artifacts", at, "VduCp artifacts")
        sol_vnic = "normal"
        vnic: VnicType | None = "normal"
        order = None
        if props is not None:
            self.only_keys(
                props,
                pat,
                ("order", "vnic_type", "trunk_mode", "virtual_network_interface_requirements"),
                ("layer_protocols", "role", "description", "protocol", "bitrate_requirement"),
                "VduCp property",
            )
            order = self.integer(props, "order", pat, minimum=0)
            if self.boolean(props, "trunk_mode", pat):
                self.unsupported(
                    pat.key("trunk_mode", line_in(props, "trunk_mode")), "trunk_mode: true"
                )
            self.no_section(
                props,
                "virtual_network_interface_requirements",
                pat,
                "virtual_network_interface_requirements",
            )
            given = self.string(props, "vnic_type", pat)
            vat = pat.key("vnic_type", line_in(props, "vnic_type"))
            if given is not None:
                sol_vnic = given
                vnic = VNIC_TYPES.get(given)
                if given in VNIC_UNSUPPORTED:
                    self.unsupported(vat, f"vnic_type {given} ({VNIC_UNSUPPORTED[given]})")
                elif vnic is None:
                    self.error(
                        vat,
                        "expected a vnic_type (normal, direct, direct-physical, "
                        f"macvtap, baremetal, virtio-forwarder, smart-nic), got {given!r}",
                    )
        reqs = self.requirements(m, at, ("virtual_binding", "virtual_link"))
        vdu = vl = None
        for req, target, qat in reqs:
            if req == "virtual_binding":
                vdu = (target, qat)
            else:
                vl = (target, qat)
        if vdu is None:
            self.error(
                at.key("requirements", line_in(m, "requirements")),
                "missing: expected a virtual_binding requirement naming a Vdu.Compute",
            )
            return None
        if vnic is None:
            return None
        return CpDraft(name, at, vdu, vl, vnic, sol_vnic, order)

    # -- VnfVirtualLink ---------------------------------------------------------------

    def vl(self, name: str, m: Map, at: At) -> VirtualLink | None:
        props, pat = self.properties(m, at)
        self.no_section(m, "requirements", at, "VnfVirtualLink requirements")
        self.no_section(m, "interfaces", at, "VnfVirtualLink interfaces")
        self.no_section(m, "artifacts", at, "VnfVirtualLink artifacts")
        if props is None:
            return None
        self.only_keys(
            props,
            pat,
            ("connectivity_type", "description", "vl_profile"),
            ("test_access",),
            "VnfVirtualLink property",
        )
        conn, cat = self.get_map(props, "connectivity_type", pat, required=True)
        if conn is not None:
            self.only_keys(
                conn, cat, ("layer_protocols",), ("flow_pattern",), "connectivity_type property"
            )
            self.get_list(conn, "layer_protocols", cat, required=True)
        description = self.string(props, "description", pat) or ""
        profile, prat = self.get_map(props, "vl_profile", pat)
        l2: Map | None = None
        l3: Map | None = None
        l2at = l3at = prat
        if profile is not None:
            self.only_keys(
                profile,
                prat,
                ("virtual_link_protocol_data",),
                ("max_bitrate_requirements", "min_bitrate_requirements", "qos"),
                "vl_profile property",
            )
            datas, dsat = self.get_list(profile, "virtual_link_protocol_data", prat)
            for i, item in enumerate(datas or []):
                iat = dsat.item(i, line_in(datas, i))
                d = self.mapping(item, iat, "virtual link protocol data (a mapping)")
                if d is None:
                    continue
                self.only_keys(
                    d,
                    iat,
                    ("l2_protocol_data", "l3_protocol_data"),
                    ("associated_layer_protocol",),
                    "virtual_link_protocol_data key",
                )
                for key in ("l2_protocol_data", "l3_protocol_data"):
                    sub, sat = self.get_map(d, key, iat)
                    if sub is None:
                        continue
                    if (l2 if key == "l2_protocol_data" else l3) is not None:
                        self.unsupported(sat, f"more than one {key} on a virtual link")
                    elif key == "l2_protocol_data":
                        l2, l2at = sub, sat
                    else:
                        l3, l3at = sub, sat
        network_type = mtu = None
        ok = True
        if l2 is not None:
            self.only_keys(
                l2,
                l2at,
                ("network_type", "vlan_transparent", "mtu"),
                ("name",),
                "l2_protocol_data property",
            )
            nt = self.string(l2, "network_type", l2at)
            if nt is not None and nt not in ("vxlan", "vlan"):
                self.unsupported(
                    l2at.key("network_type", line_in(l2, "network_type")),
                    f"network_type {nt} (Skerry's tenant networks are vxlan or vlan)",
                )
                ok = False
            elif nt is not None:
                network_type = nt
            if self.boolean(l2, "vlan_transparent", l2at):
                self.unsupported(l2at.key("vlan_transparent"), "vlan_transparent: true")
            mtu = self.integer(l2, "mtu", l2at, minimum=68, maximum=9000)
        ip_version, cidr, gateway, pools = 4, None, None, ()
        if l3 is not None:
            got = self.l3(l3, l3at)
            if got is None:
                ok = False
            else:
                ip_version, cidr, gateway, pools = got
        if not ok:
            return None
        return VirtualLink(name, description, ip_version, cidr, gateway, pools, network_type, mtu)  # type: ignore[arg-type]

    def l3(
        self, l3: Map, at: At
    ) -> tuple[int, str | None, str | None, tuple[tuple[str, str], ...]] | None:
        self.only_keys(
            l3,
            at,
            ("ip_version", "cidr", "gateway_ip", "ip_allocation_pools"),
            ("name", "dhcp_enabled", "ipv6_address_mode"),
            "l3_protocol_data property",
        )
        version = self.choice(l3, "ip_version", at, ("ipv4", "ipv6"), required=True)
        if version is None:
            return None
        ipv = 4 if version == "ipv4" else 6
        cidr = self.string(l3, "cidr", at)
        cat = at.key("cidr", line_in(l3, "cidr"))
        net = None
        if cidr is not None:
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                self.error(cat, f"expected a network like 10.0.0.0/24 (no host bits): {exc}")
                return None
            if net.version != ipv:
                self.error(cat, f"expected an {version} network, got {cidr}")
                return None
        gateway = self.string(l3, "gateway_ip", at)
        addrs = []
        if gateway is not None:
            addrs.append((gateway, at.key("gateway_ip", line_in(l3, "gateway_ip"))))
        pools: list[tuple[str, str]] = []
        plist, plat = self.get_list(l3, "ip_allocation_pools", at)
        for i, item in enumerate(plist or []):
            iat = plat.item(i, line_in(plist, i))
            p = self.mapping(item, iat, "{start_ip_address, end_ip_address}")
            if p is None:
                return None
            start = self.string(p, "start_ip_address", iat, required=True)
            end = self.string(p, "end_ip_address", iat, required=True)
            if start is None or end is None:
                return None
            addrs += [(start, iat.key("start_ip_address")), (end, iat.key("end_ip_address"))]
            pools.append((start, end))
        for addr, aat in addrs:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                self.error(aat, f"expected an IP address, got {addr!r}")
                return None
            if net is None:
                self.error(aat, "an address without a cidr to hold it; expected cidr too")
                return None
            if ip not in net:
                self.error(aat, f"expected an address inside {cidr}, got {addr}")
                return None
        return ipv, cidr, gateway, tuple(pools)
