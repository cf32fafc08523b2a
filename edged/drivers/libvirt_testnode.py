"""A host for libvirt's test driver: what ``libvirt_uri: test:///<node.xml>`` points at.

``test:///default`` is shared by every open in a process (state leaks from one
user to the next); a node XML file gives a fresh, empty host per connection.
Unit tests and benches run the real LibvirtCompute against such a host.
"""

from __future__ import annotations

from pathlib import Path


def write_test_node(directory: Path, cpus: int = 4, memory_mb: int = 8192) -> str:
    """Write ``node.xml`` describing an empty host into ``directory``; return its URI."""
    node = directory / "node.xml"
    node.write_text(
        "<node><cpu><mhz>2000</mhz><model>x86_64</model>"
        f"<active>{cpus}</active><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cpus}</cores><threads>1</threads></cpu>"
        f"<memory>{memory_mb * 1024}</memory></node>\n"  # the test driver reads KiB
    )
    return f"test://{node}"
