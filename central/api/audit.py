"""/v1/audit: the audit trail (cloud admin only)."""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_querystring, validate_response

from central.api.identity_models import AuditList, AuditQuery
from central.api.policy import audit_log, cloud_admin

bp = Blueprint("audit", __name__, url_prefix="/v1/audit")


@bp.get("")
@cloud_admin
@validate_querystring(AuditQuery)
@validate_response(AuditList)
async def list_audit(query_args: AuditQuery):  # type: ignore[no-untyped-def]
    """Audit events, newest first: ``?since=<unix time>&user=&action=&limit=``."""
    events = audit_log().query(
        query_args.since, query_args.user, query_args.action, query_args.limit
    )
    return {"events": events}
