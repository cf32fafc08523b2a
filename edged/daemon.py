"""The edge-site daemon: link + local state + a reconcile loop that never waits for central.

The loop runs a pass on every newly accepted document and every
``reconcile_interval_s`` regardless of the link, so guests are restarted and
stray domains removed with central gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import zmq.asyncio

from edged import wire
from edged.config import EdgeConfig
from edged.configfile import ConfigError
from edged.drivers.compute import ComputeDriver
from edged.drivers.numa import NumaError, inventory_section, read_topology
from edged.executor import Executor
from edged.identity import IdentityCache
from edged.image_cache import ImageCache
from edged.image_fetch import ImageClient, ImagePuller, image_endpoint
from edged.link import Link, load_curve_keys
from edged.objects.bucket_sync import sync_buckets
from edged.objects.stores import open_configured
from edged.overrides import OverrideStore
from edged.replication.sender import Settings as ReplicationSettings
from edged.replication.sender import Target
from edged.replication.site import SiteReplication
from edged.site_network import from_config as site_network
from edged.site_volumes import from_config as site_volumes
from edged.state import LocalState

log = logging.getLogger(__name__)

QUICK_PASSES = 5
QUICK_INTERVAL_S = 1.0


class EdgeDaemon:
    """One site: keeps the site's servers as the last accepted document says."""

    def __init__(self, config: EdgeConfig, driver: ComputeDriver) -> None:
        self.config = config
        self.driver = driver
        self.state = LocalState(config.state_dir)
        self.network = site_network(config, self.state)
        self.ctx = zmq.asyncio.Context()
        # Central images: pulled over CURVE into <state_dir>/images, verified, kept.
        self.image_client = ImageClient(
            image_endpoint(config), lambda: load_curve_keys(config), self.ctx
        )
        self.images = ImagePuller(
            ImageCache(config.state_dir / "images"),
            self.image_client.get,
            self.state.document,
            require_signed=config.require_signed_images,
            ttl_s=config.image_cache_ttl_s,
            on_cached=lambda: self.wake.set(),
        )
        self.volumes = site_volumes(
            config.site,
            config.volume_driver,
            config.volume_dir or config.state_dir / "volumes",
            config.libvirt_uri,
            driver,
            config.volume_luks_iter_time_ms,
            site_secret=self._curve_secret,
            images=self.images.cache,
        )
        self.executor = Executor(
            driver,
            network=self.network,
            volumes=self.volumes,
            topology=lambda: read_topology(config.sysfs_root),
            state=self.state,
            images=self.images,
        )
        self.overrides = OverrideStore(self.state)
        # Buckets follow the held document (each pass); the backend connects on first use.
        self.objects = open_configured(config.site, config)
        # Tokens are checked against the held document's snapshot from the first second.
        self.identity = IdentityCache()
        if self.state.generation:
            self.identity.load(self.state.generation, self.state.document())
        # Around every use of the driver: reconcile passes and local API actions.
        self.driver_lock = asyncio.Lock()
        self.link = Link(
            config,
            self.ctx,
            self.state.new_epoch(),
            held_generation=lambda: self.state.generation,
            on_message=self._on_message,
            on_reconnect=self._send_status,
        )
        # Object replication (started in run(); None when it could not be set up).
        self.replication: SiteReplication | None = None
        self.replication_failures = 0
        self.wake = asyncio.Event()
        self.last_report: dict[str, Any] = {}
        self.last_pass: dict[str, Any] = {}
        self.inventory: dict[str, Any] = {}
        # After a pass that acted, look again soon: new guests boot, stops settle.
        self.quick_passes = 0

    def _curve_secret(self) -> str | None:
        """The site's CURVE secret key, read now (it opens the volume keys sealed to it)."""
        try:
            return load_curve_keys(self.config).secret
        except ConfigError as exc:
            log.warning("volume keys cannot be opened: %s", exc)
            return None

    # -- control channel -------------------------------------------------------------

    async def _on_message(self, msg: wire.Message) -> None:
        if msg.type == wire.DESIRED:
            generation, document = msg["generation"], msg["document"]
            accepted = await asyncio.to_thread(self.state.accept, generation, document)
            if accepted:
                self.link.counters["desired_accepted"] += 1
                log.info("generation %d accepted", generation)
                self.identity.load(generation, document)
                self._replication_follow(document)
                self.wake.set()
                self.images.wake.set()
            else:
                self.link.counters["desired_duplicate"] += 1
            # Acknowledge only now: the document is fsynced (or was already held).
            await self.link.send(wire.ACK, generation=max(generation, self.state.generation))

    async def _send_status(self) -> None:
        observed = self.state.last_observation()
        generation, report = observed if observed else (0, {"servers": {}})
        if self.replication is not None:
            report = {**report, "buckets": self._bucket_report()}
        await self.link.send(
            wire.STATUS,
            observed_generation=generation,
            resources=report,
            health=self.health(),
            inventory=self.inventory,
        )

    def health(self) -> dict[str, Any]:
        return {
            "link": self.link.stats(),
            "reconcile": {**dict(self.executor.counters), **self.last_pass},
            "held_generation": self.state.generation,
            "identity": self.identity.stats(),
            "images": {
                **dict(self.images.counters),
                **{f"dropped_{k}": v for k, v in self.image_client.drops.items()},
            },
            "replication": self._replication_health(),
            "local_overrides": {
                o.server_id: {
                    "power": o.power,
                    "generation": o.generation,
                    "against": o.against,
                    "made_at": o.made_at,
                    "made_by": o.made_by,
                }
                for o in self.overrides.all()
            },
        }

    # -- object replication ----------------------------------------------------------

    def _start_replication(self) -> None:
        """Senders to central and peers, the peers' receiver, scrub and repair.

        Never fatal: a problem is logged and counted, and the site runs on
        without replication (objects are still served locally).
        """
        config = self.config
        try:
            keys = load_curve_keys(config)
            self.replication = SiteReplication(
                config.site,
                self.objects,
                self.ctx,
                config.state_dir,
                (keys.public, keys.secret),
                Target("central", config.central_replication_endpoint, config.central_public_key),
                ReplicationSettings(
                    in_flight=config.replication_in_flight,
                    backoff_max_s=config.replication_backoff_max_s,
                ),
                bind=config.replication_bind,
                scrub_interval_s=config.scrub_interval_s,
            )
            self.replication.start(self.state.document() or {})
        except Exception:
            self.replication_failures += 1
            self.replication = None
            log.exception("object replication not started")

    def _replication_follow(self, document: dict[str, Any]) -> None:
        """A newly held document: re-plan the replication targets (never raises)."""
        if self.replication is None:
            return
        try:
            self.replication.update(document or {})
        except Exception:
            self.replication_failures += 1
            log.exception("replication did not follow the new document")

    def _bucket_report(self) -> dict[str, Any]:
        """Per bucket, per target: the replication lag for central's bucket view."""
        try:
            assert self.replication is not None
            return {b: {"replication": t} for b, t in self.replication.status().items()}
        except Exception:
            self.replication_failures += 1
            log.exception("replication status failed")
            return {}

    def _replication_health(self) -> dict[str, Any]:
        if self.replication is None:
            return {"running": False, "failures": self.replication_failures}
        try:
            stats = self.replication.stats()
        except Exception as exc:
            return {"running": True, "failures": self.replication_failures, "error": str(exc)}
        stats.pop("buckets", None)  # in the status resources already
        return {"running": True, "failures": self.replication_failures, **stats}

    async def _stop_replication(self) -> None:
        if self.replication is None:
            return
        try:
            await asyncio.wait_for(self.replication.stop(), timeout=10)
        except Exception:
            log.exception("object replication did not stop cleanly")

    # -- reconcile loop --------------------------------------------------------------

    def _settings(self, document: dict[str, Any] | None) -> dict[str, float]:
        settings = (document or {}).get("settings") or {}
        interval = settings.get("reconcile_interval_s", self.config.reconcile_interval_s)
        grace = settings.get("stop_grace_s", self.config.stop_grace_s)
        return {"reconcile_interval_s": float(interval), "stop_grace_s": float(grace)}

    def _pass(self) -> None:
        """One full pass (worker thread): observe, plan, act, record."""
        generation, document = self.state.generation, self.state.document()
        settings = self._settings(document)
        if hasattr(self.driver, "stop_grace_s"):
            self.driver.stop_grace_s = settings["stop_grace_s"]
        result = self.executor.run_pass(generation, document, self.overrides.all())
        if result.stale_overrides:
            self.overrides.drop(result.stale_overrides)
            log.info("local power overrides ended by central: %s", result.stale_overrides)
        self.state.record_observation(generation, result.report)
        try:
            sync_buckets(self.objects, (document or {}).get("buckets", []))
        except Exception:  # objects must not stop servers from being reconciled
            self.executor.counters["bucket_sync_failures"] += 1
            log.exception("bucket sync failed")
        self.inventory = {**vars(self.driver.inventory()), **self._host_inventory()}
        self.last_pass = {
            "last_pass_at": time.time(),
            "last_pass_seconds": round(result.seconds, 3),
            "last_pass_actions": len(result.actions),
            "last_pass_errors": len(result.errors),
        }
        if result.actions or result.errors:
            self.quick_passes = QUICK_PASSES

    def _host_inventory(self) -> dict[str, Any]:
        """NUMA topology, SR-IOV counts, physnets and network capabilities for central."""
        section = self.network.inventory()
        if self.replication is not None and self.replication.receiver is not None:
            # Where peers reach this site's receiver: central puts it in their documents.
            section["replication_advertise"] = (
                self.config.replication_advertise or self.config.replication_bind
            )
        try:
            section["numa"] = inventory_section(read_topology(self.config.sysfs_root))
        except NumaError as exc:
            log.warning("NUMA topology unreadable: %s", exc)
        return section

    async def reconcile_loop(self) -> None:
        while True:
            try:
                async with self.driver_lock:
                    await asyncio.to_thread(self._pass)
            except Exception:  # a driver bug must not stop reconciling
                self.executor.counters["reconcile_failures"] += 1
                log.exception("reconcile pass failed")
            await self._send_status()
            interval = self._settings(self.state.document())["reconcile_interval_s"]
            if self.quick_passes > 0:
                self.quick_passes -= 1
                interval = min(interval, QUICK_INTERVAL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
            self.wake.clear()

    # -- local API -------------------------------------------------------------------

    def local_site(self) -> Any:
        """What the local API gets from this daemon (edged.localapi.LocalSite)."""
        from edged.localapi import LocalSite  # Quart only where the local API is on

        return LocalSite(
            site=self.config.site,
            state=self.state,
            identity=self.identity,
            overrides=self.overrides,
            driver=self.driver,
            driver_lock=self.driver_lock,
            audit_path=self.config.state_dir / "local-audit.jsonl",
            wake=self.wake.set,
            central_reachable=lambda: self.link.reachable,
            objects=self.objects,
            replication=lambda: self.replication.status() if self.replication else {},
        )

    async def serve_local_api(self, stop: asyncio.Event) -> None:
        """Bind the local API's port now; load Quart and hypercorn on its first connection.

        The local API is for a site's own operators, mostly during outages: an
        idle site does not pay the ~20 MB the web stack costs. A port that cannot
        be bound is logged, never fatal.
        """
        host, port = self.config.local_api_host, self.config.local_api_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            listener = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            log.error("local API not served on %s:%d: %s", host, port, exc)
            return
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        first_client = asyncio.Event()
        fd = listener.fileno()
        loop.add_reader(fd, first_client.set)
        try:
            await first_client.wait()
        except asyncio.CancelledError:
            loop.remove_reader(fd)
            listener.close()
            raise
        loop.remove_reader(fd)

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        from edged.localapi import create_local_app

        config = Config()
        config.bind = [f"fd://{listener.detach()}"]  # hypercorn takes the socket over
        config.accesslog = None
        config.graceful_timeout = 1.0
        log.info("local API loaded on its first connection (%s:%d)", host, port)
        await serve(create_local_app(self.local_site()), config, shutdown_trigger=stop.wait)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; guests keep running after edged stops."""
        self.link.open()
        self._start_replication()
        log.info(
            "site %s: holding generation %d, central at %s",
            self.config.site,
            self.state.generation,
            self.config.central_endpoint,
        )
        tasks = [
            asyncio.create_task(self.link.run(), name="link"),
            asyncio.create_task(self.reconcile_loop(), name="reconcile"),
            asyncio.create_task(self.images.run(), name="images"),
        ]
        if self.config.local_api_port:
            tasks.append(asyncio.create_task(self.serve_local_api(stop), name="local-api"))
        await stop.wait()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_replication()
        self.link.close()
        self.image_client.close()
        self.ctx.term()
        self.state.close()
        self.objects.close()
        self.network.close()
        if self.volumes is not None:
            self.volumes.driver.close()
        self.driver.close()
