"""Copying jobs: ``drive-mirror``/``blockdev-mirror`` and ``drive-backup``/``blockdev-backup``.

A mirror copies its source to a target and, once ready, pivots the backend onto it
(its dirty bitmap on the source in QEMU 7.2, on its ``mirror_top`` filter in 10.0);
a backup copies a point in time of its source through a ``copy-before-write``
filter.  The ``drive-`` commands create their target image first, as
``qemu-img create`` would (QEMU opens nodes to create a qcow2 image, which advances
the automatic names' counter); the ``blockdev-`` ones take a node already there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .block import Refused, refusals
from .component import on_command
from .job_start import JobStart, Plan, data_node, format_of, image_below
from .job_states import DirtyBitmaps, Job
from .nodes import Node
from .values import Outcome

_MIRROR_BUFFER = 16 << 20  # DEFAULT_MIRROR_BUF_SIZE


class CopyJobs(JobStart):
    """The commands that start a mirror or a backup."""

    def _copy_start(
        self, args: Mapping[str, Any], source: Node, target: Node, driver: str, itself: str
    ) -> tuple[Node, Node, str]:
        """Both ends free and not one image (else ``itself``), the filter named above the
        source: the source's data node, the filter and the job's id."""
        self._busy(source)
        self._busy(target)
        top = data_node(source)
        if top is data_node(target):
            raise Refused(itself)
        filter_node, job_id = self._filter(source, driver, args, source)
        return top, filter_node, job_id

    # --- mirror ----------------------------------------------------------------------

    @on_command("drive-mirror")
    @refusals
    def drive_mirror(self, args: Mapping[str, Any]) -> Outcome:
        source = self._root(str(args["device"]))
        self._busy(source)
        mode = args.get("mode", "absolute-paths")
        fmt = args.get("format") or (None if mode == "existing" else format_of(source))
        sync = str(args["sync"])
        below = image_below(source)
        if below is None and sync == "top":
            sync = "full"
        # the target backs onto what the source did (its source, for sync none)
        backing = source if sync == "none" else below if sync == "top" else None
        if args.get("replaces") is not None and args.get("node-name") is None:
            raise Refused("a node-name must be provided when replacing a named node of the graph")
        target_path = str(args["target"])
        new = mode != "existing"
        if new:
            self._create(
                target_path,
                fmt or "raw",
                data_node(source).size,
                None if sync == "full" else backing,
            )
        target = self._open_target(target_path, fmt, args.get("node-name"))
        zeroed = new and target.driver == "qcow2"  # a new qcow2 image reads as zeroes
        return self._mirror(
            args, source, target, sync, zeroed=zeroed, owns_target=True, backing=backing
        )

    @on_command("blockdev-mirror")
    @refusals
    def blockdev_mirror(self, args: Mapping[str, Any]) -> Outcome:
        source = self._root(str(args["device"]))
        target = self._node(str(args["target"]))
        sync = str(args["sync"])
        if image_below(source) is None and sync == "top":
            sync = "full"
        return self._mirror(
            args, source, target, sync, zeroed=False, owns_target=False, backing=None
        )

    def _mirror(
        self,
        args: Mapping[str, Any],
        source: Node,
        target: Node,
        sync: str,
        *,
        zeroed: bool,
        owns_target: bool,
        backing: Node | None,
    ) -> Outcome:
        top, filter_node, job_id = self._copy_start(
            args, source, target, "mirror_top", "Can't mirror node into itself"
        )
        below = image_below(source)
        if sync == "full":
            data = top.data_above(None)
        elif sync == "top":
            data = top.data_above(below)
        else:
            data = 0
        length = data if zeroed or sync != "full" else top.size
        job = Job(
            job_id,
            "mirror",
            length,
            data,
            readies=True,
            on_source_error=str(args.get("on-source-error", "report")),
            on_target_error=str(args.get("on-target-error", "report")),
        )
        job.nodes += [source, target]
        # a rate-limited mirror issues its first buffer's worth of copying before the
        # limit first applies
        buffer = int(args.get("buf-size") or _MIRROR_BUFFER)
        if length and args.get("speed"):
            job.progress = min(1.0, buffer / length)
        job.plan = Plan("mirror", filter_node, source, target, backing=backing, owns=owns_target)
        outcome = self._launch(args, job, filter_node, source, backing=True)
        if job in self.jobs.jobs:
            # the mirror's dirty bitmap: QEMU 7.2 keeps it on the source, 10.0 on its filter
            new = self.host.profile.version >= (10,)
            (filter_node if new else source).bitmaps = DirtyBitmaps(job, recording=not new)
        return outcome

    # --- backup ----------------------------------------------------------------------

    @on_command("drive-backup")
    @refusals
    def drive_backup(self, args: Mapping[str, Any]) -> Outcome:
        source = self._node(str(args["device"]))
        sync = str(args["sync"])
        below = image_below(source)
        if sync == "top" and below is None:
            sync = "full"
        mode = args.get("mode", "absolute-paths")
        fmt = args.get("format") or (None if mode == "existing" else format_of(source))
        path = str(args["target"])
        if mode != "existing":
            self._create(
                path, fmt or "raw", data_node(source).size, None if sync == "full" else below
            )
        target = self._open_target(path, fmt, None)
        return self._backup(args, source, target, sync, owns_target=True)

    @on_command("blockdev-backup")
    @refusals
    def blockdev_backup(self, args: Mapping[str, Any]) -> Outcome:
        source = self._node(str(args["device"]))
        target = self._node(str(args["target"]))
        return self._backup(args, source, target, str(args["sync"]), owns_target=False)

    def _backup(
        self, args: Mapping[str, Any], source: Node, target: Node, sync: str, *, owns_target: bool
    ) -> Outcome:
        top, filter_node, job_id = self._copy_start(
            args, source, target, "copy-before-write", "Source and target cannot be the same"
        )
        data = top.data_above(None) if sync == "full" else top.data if sync == "top" else 0
        job = Job(
            job_id,
            "backup",
            top.size,
            data,
            on_source_error=str(args.get("on-source-error", "report")),
            on_target_error=str(args.get("on-target-error", "report")),
            endless=sync == "none",
        )
        job.nodes += [source, target]
        filter_node.bitmaps = DirtyBitmaps(job, empty=1)
        job.plan = Plan("backup", filter_node, source, target, owns=owns_target)
        return self._launch(args, job, filter_node, source, backing=False, drained=True)
