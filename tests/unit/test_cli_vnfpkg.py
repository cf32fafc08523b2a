"""``skerry vnfpkgs ...`` over HTTP against the real app (the networking CLI's harness)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.unit.test_cli_network import Skerry, skerry, table  # noqa: F401 - the fixture
from tests.unit.test_vnf_packages import TEMPLATES, VNFD_IDS, zip_of


async def test_package_commands(skerry: Skerry, tmp_path: Path) -> None:  # noqa: F811
    pkg = await skerry.json("vnfpkgs", "upload", str(TEMPLATES / "vrouter"))
    assert pkg["onboardingState"] == "ONBOARDED" and pkg["vnfdId"] == VNFD_IDS["vrouter"]
    csar = tmp_path / "upf.csar"
    root = TEMPLATES / "upf"
    csar.write_bytes(
        zip_of({p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
                if p.is_file()})
    )  # fmt: skip
    upf = await skerry.json("vnfpkgs", "upload", str(csar))
    assert upf["vnfdId"] == VNFD_IDS["upf"]
    rows = table(await skerry.ok("vnfpkgs", "list"))
    assert {(r["id"], r["onboardingstate"]) for r in rows} == {
        (pkg["id"], "ONBOARDED"),
        (upf["id"], "ONBOARDED"),
    }
    assert (await skerry.json("vnfpkgs", "show", pkg["id"]))["id"] == pkg["id"]
    err = await skerry.fails("vnfpkgs", "delete", pkg["id"])
    assert "DISABLED" in err
    assert await skerry.json("vnfpkgs", "disable", pkg["id"]) == {"operationalState": "DISABLED"}
    assert await skerry.json("vnfpkgs", "enable", pkg["id"]) == {"operationalState": "ENABLED"}
    await skerry.json("vnfpkgs", "disable", pkg["id"])
    assert f"deleted {pkg['id']}" in await skerry.ok("vnfpkgs", "delete", pkg["id"])

    # A broken folder: every error printed, the package left CREATED.
    broken = tmp_path / "broken"
    shutil.copytree(TEMPLATES / "vfirewall", broken)
    entry = broken / "Definitions" / "vfirewall.yaml"
    entry.write_text(entry.read_text().replace("num_virtual_cpu: ", "num_virtual_cpu: many", 1))
    err = await skerry.fails("vnfpkgs", "upload", str(broken))
    assert "Definitions/vfirewall.yaml:" in err and "num_virtual_cpu" in err
    created = await skerry.json("vnfpkgs", "create")
    assert created["onboardingState"] == "CREATED"
    err = await skerry.fails("vnfpkgs", "upload", str(tmp_path / "nothing.txt"))
    assert "expected a package folder or a .zip/.csar" in err
