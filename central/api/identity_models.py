"""Request and response bodies of the identity routes (/v1/auth, /v1/projects,
/v1/users, /v1/audit)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from central.api.models import Strict

IDENT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
Role = Literal["reader", "member", "admin"]


class PasswordAuth(Strict):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    project: str = Field(min_length=1, max_length=64)


class AppCredentialAuth(Strict):
    id: str = Field(min_length=1, max_length=64)
    secret: str = Field(min_length=1, max_length=1024)


class TokenRequest(Strict):
    """Exactly one of ``password`` or ``application_credential``."""

    password: PasswordAuth | None = None
    application_credential: AppCredentialAuth | None = None

    @model_validator(mode="after")
    def _one_method(self) -> TokenRequest:
        if (self.password is None) == (self.application_credential is None):
            raise ValueError("give exactly one of 'password' or 'application_credential'")
        return self


class Ref(BaseModel):
    id: str
    name: str


class TokenIssued(BaseModel):
    token: str
    token_id: str
    expires_at: float
    issued_at: float
    user: Ref
    project: Ref
    roles: list[str]
    application_credential: str | None


class TokenInfo(BaseModel):
    token_id: str
    expires_at: float
    user: Ref
    project: Ref
    roles: list[str]
    is_cloud_admin: bool
    application_credential: str | None


class SigningKeyView(BaseModel):
    kid: str
    public_key: str
    state: Literal["active", "retired"]
    created_at: float


class SigningKeyList(BaseModel):
    keys: list[SigningKeyView]


class ProjectCreate(Strict):
    name: str = Field(pattern=IDENT_NAME)


class ProjectUpdate(Strict):
    enabled: bool | None = None


class Project(BaseModel):
    id: str
    name: str
    enabled: bool
    created_at: float


class ProjectList(BaseModel):
    projects: list[Project]


class UserCreate(Strict):
    name: str = Field(pattern=IDENT_NAME)
    password: str = Field(min_length=8, max_length=1024)


class UserUpdate(Strict):
    enabled: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class User(BaseModel):
    id: str
    name: str
    enabled: bool
    created_at: float


class UserList(BaseModel):
    users: list[User]


class Assignment(BaseModel):
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    role: Role


class AssignmentList(BaseModel):
    assignments: list[Assignment]


class AppCredentialCreate(Strict):
    name: str = Field(pattern=IDENT_NAME)
    roles: list[Role] | None = Field(
        default=None, description="A subset of your roles in the token's project (default all)."
    )
    expires_at: float | None = Field(default=None, description="Unix time; none never expires.")


class AppCredential(BaseModel):
    id: str
    name: str
    user_id: str
    project_id: str
    roles: list[str]
    expires_at: float | None
    created_at: float


class AppCredentialCreated(AppCredential):
    secret: str = Field(description="Shown only this once.")


class AppCredentialList(BaseModel):
    application_credentials: list[AppCredential]


class AuditQuery(Strict):
    since: float | None = None
    user: str | None = None
    action: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class AuditEntry(BaseModel):
    id: int
    at: float
    user: str
    project: str
    action: str
    target: str
    result: str
    request_id: str
    source: str


class AuditList(BaseModel):
    events: list[AuditEntry]
