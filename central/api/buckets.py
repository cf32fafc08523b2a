"""/v1/buckets at central: the shared object API (edged.objects.http) over central's store.

Central is where buckets are made: a bucket's policy names the sites that hold
it, whether they replicate to central, and whether they replicate among
themselves. The policy is kept in central's store (``buckets``) and goes into
the desired document of every listed site, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from quart import Quart, g

from central import orchestrator
from central.api.policy import principal
from central.bucket_replication import replication_view
from central.config import CentralConfig
from central.hub import Hub
from central.store import Store, now
from edged.objects.errors import ObjectError
from edged.objects.http import ObjectApi, object_blueprint
from edged.objects.store import Bucket, ObjectStore
from edged.objects.stores import open_configured
from edged.tokens import Principal

# central's HLC node id: a '.' no site name has, so it never ties with a site's stamps.
NODE = "central.skerry"
STORE_KEY = "skerry.objects"


class CentralBuckets:
    """Checks a bucket's sites and records its policy for them (edged.objects.http.BucketAdmin)."""

    def __init__(self, store: Store, hub: Hub, keep: int) -> None:
        self.store, self.hub, self.keep = store, hub, keep

    def check(
        self, who: Principal, name: str, project: str, policy: dict[str, Any]
    ) -> dict[str, Any]:
        if self.store.one("SELECT id FROM projects WHERE id = ?", (project,)) is None:
            raise ObjectError("project_id", f"project {project!r} does not exist")
        for site in policy["sites"]:
            if self.store.one("SELECT name FROM sites WHERE name = ?", (site,)) is None:
                raise ObjectError("sites", f"site {site!r} does not exist")
        return policy

    def _publish(self, sites: list[str]) -> None:
        """Inside the transaction: the next document of each site."""
        self._published = [
            (site, orchestrator.publish(self.store, site, self.keep)) for site in sites
        ]

    def _announce(self) -> None:
        for site, (generation, document) in self._published:
            self.hub.published(site, generation, document)

    def created(self, who: Principal, bucket: Bucket) -> None:
        policy = bucket.policy
        with self.store.transaction() as db:
            db["buckets"].insert(
                {
                    "name": bucket.name,
                    "project_id": bucket.project_id,
                    "sites": json.dumps(policy["sites"]),
                    "replicate_to_central": int(policy["replicate_to_central"]),
                    "peers": int(policy["peers"]),
                    "created_at": now(),
                }
            )
            self._publish(policy["sites"])
        self._announce()

    def deleted(self, who: Principal, name: str) -> None:
        row = self.store.one("SELECT sites FROM buckets WHERE name = ?", (name,))
        if row is None:
            return
        with self.store.transaction() as db:
            db.conn.execute("DELETE FROM buckets WHERE name = ?", (name,))
            db.conn.execute("DELETE FROM bucket_replication WHERE bucket = ?", (name,))
            self._publish(json.loads(row["sites"]))
        self._announce()


def _audit(event: dict[str, Any]) -> None:
    """central's audit (policy._audit) records the call; name the object as its target."""
    target = f"bucket={event['bucket']}"
    if event["key"]:
        target += f",key={event['key']}"
    g.audit_target = target


def open_object_store(config: CentralConfig) -> ObjectStore:
    return open_configured(NODE, config)


def install(
    app: Quart,
    config: CentralConfig,
    store: Store,
    hub: Hub,
    on_corrupt: Callable[[str, str], None] = lambda _bucket, _key: None,
) -> ObjectStore:
    """Open central's object store and mount the object API on ``app``; ``on_corrupt``
    hears of objects a read found corrupt."""
    objects = open_object_store(config)
    app.extensions[STORE_KEY] = objects
    api = ObjectApi(
        store=objects,
        principal=principal,
        audit=_audit,
        buckets=CentralBuckets(store, hub, config.keep_generations),
        bucket_extra=lambda b: {"replication": replication_view(store, b.name, b.policy)},
        on_corrupt=on_corrupt,
    )
    app.register_blueprint(object_blueprint(api))
    return objects
