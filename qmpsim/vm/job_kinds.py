"""Starting block jobs: mirror, commit, stream and backup, and what each does to the graph.

Each command checks its arguments in QEMU's order and with its texts, then puts
its filter node in the graph (``mirror_top`` for a mirror and an active commit,
``commit_top``, ``copy-on-read`` for a stream, ``copy-before-write`` for a
backup; named ``#blockNNN`` unless ``filter-node-name`` says otherwise), and
hands a :class:`~qmpsim.vm.job_states.Job` to the jobs component.  What succeeding
changes is the job's ``commit``: a mirror's backend now reads its target (the
pivot), a stream's and a commit's image now backs onto the base, and the nodes
nobody holds any more leave the graph.  ``drive-mirror`` and ``drive-backup``
create their target image first, as ``qemu-img create`` would (QEMU opens nodes
to create a qcow2 image, which advances the automatic names' counter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .block import BlockGraph, Refused, refusals, wellformed
from .component import Component, on_command
from .images import ImageConfig
from .job_states import DirtyBitmaps, Job
from .jobs import Jobs
from .nodes import Node
from .values import Event, Outcome

# nodes QEMU opens (and names) while it creates an image of this format
_CREATION_NODES = {"qcow2": 3, "raw": 0}
_MIRROR_BUFFER = 16 << 20  # DEFAULT_MIRROR_BUF_SIZE


class JobStarts(Component):
    """The commands that start block jobs."""

    @property
    def block(self) -> BlockGraph:
        return self.host.part(BlockGraph)

    @property
    def jobs(self) -> Jobs:
        return self.host.part(Jobs)

    # --- shared checks ---------------------------------------------------------------

    def _root(self, name: str) -> Node:
        """``qmp_get_root_bs``: a backend's root or a root node, with an image."""
        node = self.block.lookup(name, name)
        if node is None:
            raise Refused(f"Cannot find device='{name}' nor node-name='{name}'")
        graph = self.block.graph
        # an implicit filter a job put above a device's node does not count as its root
        if graph.parents(node) or node.implicit:
            raise Refused("Need a root block node")
        return node

    def _node(self, name: str) -> Node:
        """``bdrv_lookup_bs(name, name)``."""
        node = self.block.lookup(name, name)
        if node is None:
            raise Refused(f"Cannot find device='{name}' nor node-name='{name}'")
        return node

    def _busy(self, node: Node) -> None:
        """A node another job works on is blocked for this one."""
        for job in self.jobs.jobs:
            if node in job.nodes:
                raise Refused(
                    f"Node '{self.block.device_or_node_name(node)}' is busy: "
                    f"block device is in use by block job: {job.type}"
                )

    def _job_id(self, args: Mapping[str, Any], device_of: Node) -> str:
        """``job_create``'s checks: the id given, else the device's name."""
        given = args.get("job-id")
        job_id = str(given) if given is not None else self.block.device_name(device_of)
        if not wellformed(job_id):
            raise Refused(f"Invalid job ID '{job_id}'")
        if self.jobs.find(job_id) is not None:
            raise Refused(f"Job ID '{job_id}' already in use")
        return job_id

    def _filter(
        self, node: Node, driver: str, args: Mapping[str, Any], device_of: Node
    ) -> tuple[Node, str]:
        """Name a job's filter node (it joins the graph above ``node`` once the job
        starts), then check the job's id: QEMU names the filter first, so a refused id
        has used up an automatic name."""
        given = args.get("filter-node-name")
        name, auto = self.block.graph.name(given)
        filter_node = self.block.graph.add(
            Node(
                name,
                driver,
                node.filename,
                node.size,
                node.allocated,
                auto=auto,
                implicit=given is None and driver != "copy-before-write",
            )
        )
        try:
            return filter_node, self._job_id(args, device_of)
        except Refused:
            self.block.graph.drop(filter_node)
            raise

    def _launch(
        self,
        args: Mapping[str, Any],
        job: Job,
        filter_node: Node,
        under: Node,
        *,
        backing: bool,
        drained: bool = False,
    ) -> Outcome:
        """Insert the filter above ``under``, check the speed, start the job."""
        speed = int(args.get("speed", 0))
        if speed < 0:
            self.block.graph.drop(filter_node)
            return Outcome(*self._early_fail(job))
        job.speed = speed
        job.graph = self
        job.auto_finalize = bool(args.get("auto-finalize", True))
        job.auto_dismiss = bool(args.get("auto-dismiss", True))
        if backing:
            filter_node.backing = under
        else:
            filter_node.file = under
        self.block.graph.insert_above(under, filter_node)
        job.nodes.append(filter_node)
        events = self.jobs.start(job, drained=drained)
        return Outcome({}, tuple(self.block.pending_events() + events))

    def _early_fail(self, job: Job) -> tuple[Any, tuple[Event, ...]]:
        from .values import CommandError

        error = CommandError("GenericError", "Parameter 'speed' expects a non-negative value")
        return error, tuple(self.jobs.early_fail(job))

    # --- what jobs do to the graph (qmpsim.vm.job_states.GraphChanges) ---------------------

    def synced(self, job: Job) -> None:
        plan: Plan = job.plan
        if plan.kind == "mirror" and plan.target is not None:
            plan.target.written(job.data)

    def commit(self, job: Job) -> None:
        plan: Plan = job.plan
        graph = self.block.graph
        source, target = plan.source, plan.target
        assert source is not None
        if plan.kind == "mirror":
            assert target is not None
            source.bitmaps = None
            if plan.backing is not None:
                target.backing = plan.backing
                target.backing_file = plan.backing.filename
            graph.replace(plan.filter, target)
            graph.drop(plan.filter)
            if not graph.in_use(source) and not source.monitor:
                graph.drop(source)
        elif plan.kind == "active commit":
            assert target is not None  # the base
            target.written(target.data + job.data)
            # the base was reopened read-write for the job; it is the active layer now
            target.read_only = False
            if target.file is not None:
                target.file.read_only = False
            graph.replace(plan.filter, target)
            graph.drop(plan.filter)
            _drop_chain(graph, source, target)
        elif plan.kind == "commit":
            assert target is not None and plan.overlay is not None
            target.written(target.data + job.data)
            plan.overlay.backing = target
            plan.overlay.backing_file = plan.backing_file
            graph.drop(plan.filter)
            _drop_chain(graph, source, target)
        elif plan.kind == "stream":
            source.written(source.data + job.data)
            self._remove_filter(plan.filter)
            old = source.backing
            source.backing = target  # the base, if any
            source.backing_file = plan.backing_file
            if old is not None and old is not target:
                _drop_chain(graph, old, target)
        else:  # backup
            assert target is not None
            target.written(job.data)
            self._backup_done(plan)

    def abort(self, job: Job) -> None:
        plan: Plan = job.plan
        graph = self.block.graph
        if plan.kind == "mirror":
            assert plan.source is not None and plan.target is not None
            plan.source.bitmaps = None
            plan.target.written(round(job.data * job.progress))
            self._remove_filter(plan.filter)
            if plan.owns and not graph.in_use(plan.target):
                graph.drop(plan.target)
        elif plan.kind == "backup":
            self._backup_done(plan)
        else:
            self._remove_filter(plan.filter)

    def _backup_done(self, plan: Plan) -> None:
        graph = self.block.graph
        self._remove_filter(plan.filter)
        if plan.owns and plan.target is not None and not graph.in_use(plan.target):
            graph.drop(plan.target)

    def _remove_filter(self, filter_node: Node) -> None:
        graph = self.block.graph
        below = filter_node.child
        if below is not None:
            graph.replace(filter_node, below)
        graph.drop(filter_node)

    def _create(self, path: str, fmt: str, size: int, backing: Node | None) -> ImageConfig:
        """``bdrv_img_create``: a new image file, as ``qemu-img create`` makes it."""
        self.block.graph.counter += _CREATION_NODES.get(fmt, 0)
        image = ImageConfig(path, fmt, size, backing=backing.filename if backing else None)
        self.block.images[path] = image
        return image

    def _open_target(self, path: str, fmt: str | None, node_name: str | None) -> Node:
        known = self.block.images.get(path)
        if known is None or (fmt is not None and known.format != fmt):
            known = ImageConfig(path, fmt or "raw")
        return self.block.graph.open_image(
            known, self.block.images, node_name=node_name, backing=False
        )

    # --- mirror ----------------------------------------------------------------------

    @on_command("drive-mirror")
    @refusals
    def drive_mirror(self, args: Mapping[str, Any]) -> Outcome:
        source = self._root(str(args["device"]))
        self._busy(source)
        mode = args.get("mode", "absolute-paths")
        fmt = args.get("format") or (None if mode == "existing" else _format_of(source))
        sync = str(args["sync"])
        below = _image_below(source)
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
                _data_node(source).size,
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
        if _image_below(source) is None and sync == "top":
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
        self._busy(source)
        self._busy(target)
        top = _data_node(source)
        if top is _data_node(target):
            raise Refused("Can't mirror node into itself")
        filter_node, job_id = self._filter(source, "mirror_top", args, source)
        below = _image_below(source)
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

    # --- commit ----------------------------------------------------------------------

    @on_command("block-commit")
    @refusals
    def block_commit(self, args: Mapping[str, Any]) -> Outcome:
        active = self._root(str(args["device"]))
        self._busy(active)
        top = _data_node(active)
        if args.get("top-node") is not None and args.get("top") is not None:
            raise Refused("'top-node' and 'top' are mutually exclusive")
        if args.get("top-node") is not None:
            found = self.block.graph.find(str(args["top-node"]))
            if found is None:
                raise Refused(f"Cannot find device='' nor node-name='{args['top-node']}'")
            if found not in list(top.chain()):
                raise Refused(f"'{args['top-node']}' is not in this backing file chain")
            top = found
        elif args.get("top") and args["top"] != top.filename:
            found = _find_in_chain(top, str(args["top"]))
            if found is None:
                raise Refused(f"Top image file {args['top']} not found")
            top = found
        if args.get("base-node") is not None and args.get("base") is not None:
            raise Refused("'base-node' and 'base' are mutually exclusive")
        if args.get("base-node") is not None:
            base = self.block.graph.find(str(args["base-node"]))
            if base is None:
                raise Refused(f"Cannot find device='' nor node-name='{args['base-node']}'")
            if base not in list(top.chain()):
                raise Refused(f"'{args['base-node']}' is not in this backing file chain")
        elif args.get("base"):
            found = _find_in_chain(top, str(args["base"]))
            if found is None:
                raise Refused(f"Can't find '{args['base']}' in the backing chain")
            base = found
        else:
            base = list(top.chain())[-1]
        if top is base:
            raise Refused("cannot commit an image into itself")
        if top is _data_node(active):
            return self._active_commit(args, active, top, base)
        return self._commit(args, active, top, base)

    def _active_commit(
        self, args: Mapping[str, Any], active: Node, top: Node, base: Node
    ) -> Outcome:
        if args.get("backing-file") is not None:
            raise Refused("'backing-file' specified, but 'top' is the active layer")
        filter_node, job_id = self._filter(active, "mirror_top", args, active)
        data = top.data_above(base)
        job = Job(
            job_id,
            "commit",
            data,
            data,
            readies=True,
            on_source_error=str(args.get("on-error", "report")),
            on_target_error=str(args.get("on-error", "report")),
        )
        job.nodes += [active, base]
        job.plan = Plan("active commit", filter_node, top, base)
        return self._launch(args, job, filter_node, active, backing=True)

    def _commit(self, args: Mapping[str, Any], active: Node, top: Node, base: Node) -> Outcome:
        overlay = next(n for n in _data_node(active).chain() if n.backing is top)
        filter_node, job_id = self._filter(top, "commit_top", args, active)
        data = top.data_above(base)
        job = Job(
            job_id,
            "commit",
            top.size,
            data,
            on_source_error=str(args.get("on-error", "report")),
            on_target_error=str(args.get("on-error", "report")),
        )
        job.nodes += [top, base]
        job.plan = Plan("commit", filter_node, top, base, overlay=overlay)
        job.plan.backing_file = str(args.get("backing-file") or base.filename)
        return self._launch(args, job, filter_node, top, backing=True)

    # --- stream ----------------------------------------------------------------------

    @on_command("block-stream")
    @refusals
    def block_stream(self, args: Mapping[str, Any]) -> Outcome:
        node = self._node(str(args["device"]))
        top = _data_node(node)
        base: Node | None = None
        if args.get("base") is not None and args.get("base-node") is not None:
            raise Refused("'base' and 'base-node' cannot be specified at the same time")
        if args.get("base") is not None:
            base = _find_in_chain(top, str(args["base"]))
            if base is None:
                raise Refused(f"Can't find '{args['base']}' in the backing chain")
        if args.get("base-node") is not None:
            base = self.block.graph.find(str(args["base-node"]))
            if base is None:
                raise Refused(f"Cannot find device='' nor node-name='{args['base-node']}'")
            if base not in list(top.chain()):
                raise Refused(
                    f"Node '{args['base-node']}' is not a backing image of '{args['device']}'"
                )
        if args.get("backing-file") is not None and base is None:
            raise Refused("backing file specified, but streaming the entire chain")
        self._busy(node)
        self._busy(top)
        filter_node, job_id = self._filter(top, "copy-on-read", args, node)
        under = top.backing
        job = Job(
            job_id,
            "stream",
            top.size,
            under.data_above(base) if under else 0,
            on_source_error=str(args.get("on-error", "report")),
            on_target_error=str(args.get("on-error", "report")),
        )
        job.nodes.append(top)
        job.plan = Plan("stream", filter_node, top, base)
        if base is not None:
            job.plan.backing_file = str(args.get("backing-file") or base.filename)
        return self._launch(args, job, filter_node, top, backing=False)

    # --- backup ----------------------------------------------------------------------

    @on_command("drive-backup")
    @refusals
    def drive_backup(self, args: Mapping[str, Any]) -> Outcome:
        source = self._node(str(args["device"]))
        sync = str(args["sync"])
        below = _image_below(source)
        if sync == "top" and below is None:
            sync = "full"
        mode = args.get("mode", "absolute-paths")
        fmt = args.get("format") or (None if mode == "existing" else _format_of(source))
        path = str(args["target"])
        if mode != "existing":
            self._create(
                path, fmt or "raw", _data_node(source).size, None if sync == "full" else below
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
        self._busy(source)
        self._busy(target)
        top = _data_node(source)
        if top is _data_node(target):
            raise Refused("Source and target cannot be the same")
        filter_node, job_id = self._filter(source, "copy-before-write", args, source)
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


@dataclass(eq=False)
class Plan:
    """The nodes a job works with, and what it does to them (:class:`JobStarts` acts on it)."""

    kind: str
    """``mirror``, ``active commit``, ``commit``, ``stream`` or ``backup``."""
    filter: Node
    source: Node | None
    target: Node | None
    overlay: Node | None = None
    backing: Node | None = None
    """A new mirror target's backing once it pivots."""
    owns: bool = False
    """The job opened the target (drive-mirror, drive-backup): it goes with the job."""
    backing_file: str = ""
    """The backing file name a stream or a commit writes into the image above."""


def _data_node(node: Node) -> Node:
    while node.is_filter and node.child is not None:
        node = node.child
    return node


def _image_below(node: Node) -> Node | None:
    return _data_node(node).backing


def _format_of(node: Node) -> str:
    return _data_node(node).driver


def _find_in_chain(top: Node, filename: str) -> Node | None:
    """``bdrv_find_backing_image``: the image under ``top`` whose file is ``filename``."""
    return next((n for n in top.chain() if n is not top and n.filename == filename), None)


def _drop_chain(graph: Any, top: Node, base: Node | None, *, include_top: bool = True) -> None:
    """Drop the images from ``top`` down to ``base`` (excluded) that nothing holds any more."""
    node: Node | None = top
    doomed = []
    while node is not None and node is not base:
        doomed.append(node)
        node = node.backing
    for n in doomed:
        n.backing = None
    for n in doomed:
        if (include_top or n is not top) and not n.monitor and not graph.in_use(n):
            graph.drop(n)
