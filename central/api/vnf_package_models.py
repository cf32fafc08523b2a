"""Request bodies of /vnfpkgm/v1/vnf_packages (ETSI SOL 005 names, camelCase)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from central.api.models import Strict


class VnfPkgCreate(Strict):
    userDefinedData: dict[str, Any] = Field(
        default_factory=dict, description="Free key-value pairs kept with the package."
    )


class VnfPkgPatch(Strict):
    operationalState: Literal["ENABLED", "DISABLED"] | None = Field(
        default=None, description="ENABLED: VNF instances may be made from it."
    )
    userDefinedData: dict[str, Any] | None = Field(
        default=None, description="Keys to add or replace (a null value removes the key)."
    )
