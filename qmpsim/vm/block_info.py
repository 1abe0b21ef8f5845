"""What the block queries answer, built member by member in QEMU's declaration order.

QEMU writes a reply's members in the order of its hash table (``qmpsim.qmp.wire``
does that); within one bucket the order they were inserted in decides, which is
the order the QAPI schema declares them in.  So each builder here inserts
members in schema order, with the members newer QEMUs added where they declare
them: ``active`` in BlockDeviceInfo (10.0), a file node's ``format-specific``
(8.0), ImageInfo's ``format-specific`` before ``backing-image`` (8.0), the
zone-append counters of BlockDeviceStats (8.1).
"""

from __future__ import annotations

import json
from typing import Any

from .images import QCOW2_CLUSTER
from .nodes import Backend, Node, Stats, Throttle

Version = tuple[int, int, int]

THROTTLE_LIMITS = ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr")
THROTTLE_EXTRAS = (
    "bps_max",
    "bps_rd_max",
    "bps_wr_max",
    "iops_max",
    "iops_rd_max",
    "iops_wr_max",
    "bps_max_length",
    "bps_rd_max_length",
    "bps_wr_max_length",
    "iops_max_length",
    "iops_rd_max_length",
    "iops_wr_max_length",
    "iops_size",
)

# ImageInfoSpecificQCow2 of an image `qemu-img create -f qcow2` made (QEMU 7.2's defaults)
_QCOW2_INFO = {
    "compat": "1.1",
    "extended-l2": False,
    "lazy-refcounts": False,
    "corrupt": False,
    "refcount-bits": 16,
    "compression-type": "zlib",
}


def filename(node: Node) -> str:
    """The file name QEMU shows for ``node``: a node opened without the backing file
    its image names is described by its options (a ``json:`` pseudo file name)."""
    if node.detached and node.file is not None:
        return (
            f'json:{{"backing": null, "driver": {json.dumps(node.driver)}, '
            f'"file": {{"driver": "file", "filename": {json.dumps(node.file.filename)}}}}}'
        )
    return node.filename


def image_info(node: Node, version: Version, *, nested: bool = True) -> dict[str, Any]:
    """ImageInfo of ``node`` (its backing chain nested unless ``nested`` is false)."""
    info: dict[str, Any] = {"filename": filename(node), "format": node.driver, "dirty-flag": False}
    info["actual-size"] = node.allocated
    info["virtual-size"] = node.size
    under = _data_node(node)
    if under.driver == "qcow2":
        info["cluster-size"] = QCOW2_CLUSTER
    if node.backing_file and not node.is_filter:
        info["backing-filename"] = node.backing_file
        info["full-backing-filename"] = (
            node.backing.filename if node.backing is not None else node.backing_file
        )
        info["backing-filename-format"] = node.backing.driver if node.backing else "qcow2"
    specific = _format_specific(node, version)
    # a filter shows the image it filters as its backing image
    below = node.child if node.is_filter else node.backing
    backing = image_info(below, version) if nested and below is not None else None
    if version >= (8, 0, 0):
        if specific is not None:
            info["format-specific"] = specific
        if backing is not None:
            info["backing-image"] = backing
    else:
        if backing is not None:
            info["backing-image"] = backing
        if specific is not None:
            info["format-specific"] = specific
    return info


def _data_node(node: Node) -> Node:
    """The format node a filter filters (``node`` itself when it is none)."""
    while node.is_filter and node.child is not None:
        node = node.child
    return node


def _format_specific(node: Node, version: Version) -> dict[str, Any] | None:
    if node.driver == "qcow2":
        return {"type": "qcow2", "data": dict(_QCOW2_INFO)}
    if node.driver == "file" and version >= (8, 0, 0):
        return {"type": "file", "data": {}}
    return None


def device_info(
    node: Node,
    version: Version,
    throttle: Throttle | None = None,
    *,
    nested: bool = True,
) -> dict[str, Any]:
    """BlockDeviceInfo of ``node``; ``throttle`` is its backend's, in ``query-block``."""
    info: dict[str, Any] = {"file": filename(node), "node-name": node.name, "ro": node.read_only}
    info["drv"] = node.driver
    if node.backing is not None and not node.is_filter:
        info["backing_file"] = node.backing_file
    # counted along the nested image info, so a flat answer says 0
    info["backing_file_depth"] = node.depth if nested else 0
    if version >= (10, 0, 0):
        info["active"] = True
    info["encrypted"] = False
    info["detect_zeroes"] = "off"
    limits = throttle.limits if throttle is not None else {}
    for name in THROTTLE_LIMITS:
        info[name] = limits.get(name, 0)
    info["image"] = image_info(node, version, nested=nested)
    if throttle is not None:
        # a burst limit brings its length along (1 second unless given)
        for name in THROTTLE_EXTRAS[:6]:
            if limits.get(name):
                info[name] = limits[name]
        for name in THROTTLE_EXTRAS[:6]:
            if limits.get(name):
                info[f"{name}_length"] = limits.get(f"{name}_length") or 1
        if limits.get("iops_size"):
            info["iops_size"] = limits["iops_size"]
        info["group"] = throttle.group
    info["cache"] = {"writeback": True, "direct": False, "no-flush": False}
    info["write_threshold"] = 0
    if node.bitmaps is not None:
        info["dirty-bitmaps"] = [
            {
                "count": count,
                "granularity": QCOW2_CLUSTER,
                "recording": recording,
                "busy": False,
                "persistent": False,
            }
            for count, recording in node.bitmaps()
        ]
    return info


def block_info(backend: Backend, version: Version, top: Node | None) -> dict[str, Any]:
    """BlockInfo of ``backend`` (``query-block``); ``top`` is what it shows as inserted."""
    d = backend.config
    info: dict[str, Any] = {"device": d.wire_name}
    if d.qdev:
        info["qdev"] = d.qdev
    info["type"] = "unknown"
    info["removable"] = backend.removable
    info["locked"] = backend.locked
    if top is not None:
        info["inserted"] = device_info(top, version, backend.throttle)
    if backend.removable:
        info["tray_open"] = backend.tray_open
    if d.iostatus_enabled:
        info["io-status"] = backend.io_status
    return info


def legacy_block_info(backend: Backend) -> dict[str, Any]:
    """BlockInfo as QEMU 0.14 answered it."""
    d = backend.config
    info: dict[str, Any] = {
        "device": d.wire_name,
        "type": "cdrom" if backend.removable else "hd",
        "removable": backend.removable,
        "locked": backend.locked,
    }
    if backend.root is not None:
        info["inserted"] = {
            "file": backend.root.filename,
            "ro": backend.root.read_only,
            "drv": backend.root.driver,
            "encrypted": False,
        }
    return info


# --- query-blockstats -------------------------------------------------------------


def device_stats(
    version: Version,
    *,
    node: Node | None = None,
    stats: Stats | None = None,
    now: float = 0.0,
    accounting: bool = False,
) -> dict[str, Any]:
    """BlockDeviceStats: a backend's counters (``stats``), else a node's (all zero
    but the highest offset written)."""
    s = stats if stats is not None else Stats()
    zones = version >= (8, 1, 0)
    out: dict[str, Any] = {"rd_bytes": s.rd_bytes, "wr_bytes": s.wr_bytes}
    if zones:
        out["zone_append_bytes"] = 0
    out["unmap_bytes"] = 0
    out["rd_operations"] = s.rd_operations
    out["wr_operations"] = s.wr_operations
    if zones:
        out["zone_append_operations"] = 0
    out["flush_operations"] = s.flush_operations
    out["unmap_operations"] = 0
    out["rd_total_time_ns"] = s.rd_total_time_ns
    out["wr_total_time_ns"] = s.wr_total_time_ns
    if zones:
        out["zone_append_total_time_ns"] = 0
    out["flush_total_time_ns"] = s.flush_total_time_ns
    out["unmap_total_time_ns"] = 0
    out["wr_highest_offset"] = node.wr_highest_offset if node is not None else 0
    out["rd_merged"] = 0
    out["wr_merged"] = 0
    if zones:
        out["zone_append_merged"] = 0
    out["unmap_merged"] = 0
    if stats is not None and s.last_io is not None:
        out["idle_time_ns"] = max(0, round((now - s.last_io) * 1e9))
    out["failed_rd_operations"] = s.failed_rd_operations
    out["failed_wr_operations"] = s.failed_wr_operations
    if zones:
        out["failed_zone_append_operations"] = 0
    out["failed_flush_operations"] = s.failed_flush_operations
    out["failed_unmap_operations"] = 0
    out["invalid_rd_operations"] = 0
    out["invalid_wr_operations"] = 0
    if zones:
        out["invalid_zone_append_operations"] = 0
    out["invalid_flush_operations"] = 0
    out["invalid_unmap_operations"] = 0
    out["account_invalid"] = accounting
    out["account_failed"] = accounting
    out["timed_stats"] = []
    return out


def node_stats(node: Node, version: Version, *, backing: bool) -> dict[str, Any]:
    """BlockStats of a node (``bdrv_query_bds_stats``): its data child as ``parent``,
    its backing as ``backing`` when ``backing`` (a backend's view)."""
    out: dict[str, Any] = {"node-name": node.name, "stats": device_stats(version, node=node)}
    if node.driver == "file":
        out["driver-specific"] = {
            "driver": "file",
            "discard-nb-ok": 0,
            "discard-nb-failed": 0,
            "discard-bytes-ok": 0,
        }
    # the primary child: a filter's only child, else the file under a format
    primary = node.child if node.is_filter else node.file
    if primary is not None:
        out["parent"] = node_stats(primary, version, backing=backing)
    if backing and node.backing is not None and not node.is_filter:
        out["backing"] = node_stats(node.backing, version, backing=backing)
    return out


def backend_stats(backend: Backend, version: Version, now: float) -> dict[str, Any]:
    """BlockStats of a backend: its counters, and its root node's view."""
    d = backend.config
    out: dict[str, Any] = {"device": d.wire_name}
    if d.qdev:
        out["qdev"] = d.qdev
    root = backend.root
    if root is not None:
        out["node-name"] = root.name
    out["stats"] = device_stats(version, node=root, stats=backend.stats, now=now, accounting=True)
    if root is not None:
        view = node_stats(root, version, backing=True)
        for key in ("driver-specific", "parent", "backing"):
            if key in view:
                out[key] = view[key]
    return out
