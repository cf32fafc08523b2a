"""Helpers for the descriptor tests: a template as plain data, written back out as a
package folder (TOSCA.meta + Definitions/<name>.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "vnf-templates"
SAMPLES = ROOT / "tests" / "vnfd_samples"
TEMPLATE_NAMES = ("vrouter", "vfirewall", "upf", "dns-cache")


def template_doc(name: str) -> dict[str, Any]:
    return yaml.safe_load((TEMPLATES / name / "Definitions" / f"{name}.yaml").read_text())


def write_package(root: Path, doc: Any, name: str = "vnf", text: str | None = None) -> Path:
    """A package folder at ``root`` whose entry is Definitions/<name>.yaml."""
    (root / "TOSCA-Metadata").mkdir(parents=True, exist_ok=True)
    (root / "Definitions").mkdir(exist_ok=True)
    (root / "TOSCA-Metadata" / "TOSCA.meta").write_text(
        f"TOSCA-Meta-File-Version: 1.0\nEntry-Definitions: Definitions/{name}.yaml\n"
    )
    body = text if text is not None else yaml.safe_dump(doc, sort_keys=False)
    (root / "Definitions" / f"{name}.yaml").write_text(body)
    return root
