"""What every block job start shares: the checks, the filter node, the launch, the plan.

Each job-starting command (:mod:`qmpsim.vm.job_copy`, :mod:`qmpsim.vm.job_kinds`)
checks its nodes and its id as ``qmp_get_root_bs``, ``bdrv_lookup_bs`` and
``job_create`` do, names its filter node (QEMU names it before it checks the job's
id), then :meth:`JobStart._launch` puts the filter above its node and hands the
:class:`~qmpsim.vm.job_states.Job` to the jobs component.  The job's :class:`Plan`
says which nodes it works with; what succeeding or failing does to them
(:class:`~qmpsim.vm.job_states.GraphChanges`) is here too, one rule per kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .block import BlockGraph, Refused, wellformed
from .component import Component
from .images import ImageConfig
from .job_states import Job
from .jobs import Jobs
from .nodes import Node
from .values import Event, Outcome

# nodes QEMU opens (and names) while it creates an image of this format
_CREATION_NODES = {"qcow2": 3, "raw": 0}


class JobStart(Component):
    """The base of the job-starting component: shared checks, launch, graph changes."""

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


@dataclass(eq=False)
class Plan:
    """The nodes a job works with, and what it does to them (:class:`JobStart` acts on it)."""

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


def data_node(node: Node) -> Node:
    """The node under ``node``'s job filters: the image that holds its data."""
    while node.is_filter and node.child is not None:
        node = node.child
    return node


def image_below(node: Node) -> Node | None:
    """The backing image of ``node``'s data node, if any."""
    return data_node(node).backing


def format_of(node: Node) -> str:
    """The format of ``node``'s data node: a drive- job's new target gets it by default."""
    return data_node(node).driver


def find_in_chain(top: Node, filename: str) -> Node | None:
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
