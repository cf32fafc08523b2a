"""Request and response bodies of /vnflcm/v1 (ETSI NFV-SOL 003 names, camelCase)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from central.api.models import NAME


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateVnfRequest(Strict):
    vnfdId: str = Field(min_length=1, max_length=128)
    vnfInstanceName: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
    vnfInstanceDescription: str | None = Field(default=None, max_length=1024)


class ExtCp(BaseModel):
    cpdId: str = Field(min_length=1, max_length=128)


class ExtVirtualLink(BaseModel):
    id: str = Field(min_length=1, max_length=128)
    resourceId: str = Field(
        min_length=1, max_length=64, description="A central network at the target site."
    )
    extCps: list[ExtCp] = Field(min_length=1, max_length=64)


class InstantiateParams(BaseModel):
    site: str = Field(pattern=NAME, description="The site the VNF is instantiated at.")


class InstantiateVnfRequest(Strict):
    flavourId: str = Field(min_length=1, max_length=128)
    instantiationLevelId: str | None = Field(default=None, max_length=128)
    extVirtualLinks: list[ExtVirtualLink] = Field(default_factory=list, max_length=64)
    additionalParams: InstantiateParams


class TerminateVnfRequest(Strict):
    terminationType: Literal["FORCEFUL", "GRACEFUL"]
    gracefulTerminationTimeout: int | None = Field(default=None, ge=0, le=3600)


class ScaleVnfRequest(Strict):
    type: Literal["SCALE_OUT", "SCALE_IN"]
    aspectId: str = Field(min_length=1, max_length=128)
    numberOfSteps: int = Field(default=1, ge=1, le=100)


class HealParams(BaseModel):
    healType: Literal["RESTART", "RECREATE"] = Field(
        default="RECREATE",
        description="RESTART: stop and start the servers; RECREATE: new servers on the same "
        "ports and volumes.",
    )


class HealVnfRequest(Strict):
    vnfcInstanceId: list[str] = Field(min_length=1, max_length=64)
    cause: str | None = Field(default=None, max_length=1024)
    additionalParams: HealParams = Field(default_factory=HealParams)
