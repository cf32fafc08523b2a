"""Helpers for the end-to-end tests: look at and poke the real libvirt domains."""

from __future__ import annotations

from central.localcluster import LocalCluster

URI = "qemu:///system"


def domains(site: str) -> dict[str, bool]:
    """This site's libvirt domains by name, with whether each is running."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        return {
            d.name(): bool(d.isActive())
            for d in conn.listAllDomains()
            if d.name().startswith(f"skerry-{site}-")
        }
    finally:
        conn.close()


def destroy_domain(name: str) -> None:
    """Kill a guest behind edged's back."""
    import libvirt

    conn = libvirt.open(URI)
    try:
        conn.lookupByName(name).destroy()
    finally:
        conn.close()


def add_site(cluster: LocalCluster, site: str, **overrides: object) -> None:
    """Register the site with a fresh enrolled key pair and start its edged."""
    cluster.add_site(site, **overrides)
