"""/v1/sites/{name}/key: enroll, rotate and revoke a site's CURVE public key.

A site's edged can reach central's hub only with the key enrolled here, and
only for its own site. Enrolling a new key (rotation) or revoking the key cuts
off connections made with the old one at once: the hub drops their messages
(``revoked_key``) and sends them nothing; the site shows ``down`` after
``site_down_after_s``. The hub keeps the enrolled keys in memory (its ZAP
handler asks no database per handshake); these routes update the store first,
then the hub.
"""

from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request, validate_response

from central.api.errors import conflict, not_found
from central.api.models import Error, Site, Strict
from central.api.policy import cloud_admin
from central.api.services import services, site_change
from central.bucket_replication import peers_of
from central.volume_state import has_encrypted_volumes
from central.zap import PublicKey, fingerprint

bp = Blueprint("site_keys", __name__, url_prefix="/v1/sites")


class SiteKey(Strict):
    public_key: PublicKey


def key_not_taken(public_key: str, site: str) -> None:
    """409 if ``public_key`` is enrolled for a site other than ``site``."""
    other = services().store.one(
        "SELECT name FROM sites WHERE public_key = ? AND name != ?", (public_key, site)
    )
    if other is not None:
        raise conflict(
            f"key {fingerprint(public_key)}… is already enrolled for site {other['name']!r}",
            field="public_key",
            site=other["name"],
        )


def _site_row(name: str) -> dict:
    row = services().store.one("SELECT * FROM sites WHERE name = ?", (name,))
    if row is None:
        raise not_found("site", name)
    return row


def _view(name: str) -> dict:
    from central.api.sites import site_view  # sites imports this module

    return site_view(_site_row(name))


def _republish_peers(site: str) -> None:
    """The sites replicating with ``site`` admit it by its key: give them the new one."""
    for peer in peers_of(services().store, site):
        with site_change(peer):
            pass


@bp.put("/<name>/key")
@cloud_admin
@validate_request(SiteKey)
@validate_response(Site)
@validate_response(Error, 400)
@validate_response(Error, 404)
@validate_response(Error, 409)
async def enroll_key(name: str, data: SiteKey):  # type: ignore[no-untyped-def]
    """Enroll or rotate the site's CURVE public key (the old key stops working at once)."""
    svc = services()
    with svc.store.transaction():
        _site_row(name)
        key_not_taken(data.public_key, name)
        svc.store.db.execute(
            "UPDATE sites SET public_key = ? WHERE name = ?", (data.public_key, name)
        )
    if has_encrypted_volumes(svc.store, name):
        with site_change(name):  # volume keys are sealed to the new key
            pass
    svc.hub.enroll(name, data.public_key)
    _republish_peers(name)
    return _view(name)


@bp.delete("/<name>/key")
@cloud_admin
@validate_response(Site)
@validate_response(Error, 404)
async def revoke_key(name: str):  # type: ignore[no-untyped-def]
    """Revoke the site's key: its link is cut off now, new handshakes with it are refused."""
    svc = services()
    with svc.store.transaction():
        _site_row(name)
        svc.store.db.execute("UPDATE sites SET public_key = NULL WHERE name = ?", (name,))
    svc.hub.revoke(name)
    _republish_peers(name)
    return _view(name)
