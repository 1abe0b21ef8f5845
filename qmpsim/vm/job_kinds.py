"""Starting block jobs: mirror, commit, stream and backup, and what each does to the graph.

Each command checks its arguments in QEMU's order and with its texts, then puts
its filter node in the graph (``mirror_top`` for a mirror and an active commit,
``commit_top``, ``copy-on-read`` for a stream, ``copy-before-write`` for a
backup; named ``#blockNNN`` unless ``filter-node-name`` says otherwise), and
hands a :class:`~qmpsim.vm.job_states.Job` to the jobs component.  What succeeding
changes is the job's ``commit``: a mirror's backend now reads its target (the
pivot), a stream's and a commit's image now backs onto the base, and the nodes
nobody holds any more leave the graph.

One component, :class:`JobStarts`, built in layers, each a module:

* :mod:`qmpsim.vm.job_start`: the checks every kind shares, its filter node, the
  launch, the :class:`Plan` and what a finished job does to the graph;
* :mod:`qmpsim.vm.job_copy`: the copying jobs, mirror and backup;
* this module: the jobs that shorten a backing chain, ``block-commit`` (active or
  not) and ``block-stream``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .block import Refused, refusals
from .component import on_command
from .job_copy import CopyJobs
from .job_start import JobStart, Plan, data_node, find_in_chain
from .job_states import Job
from .nodes import Node
from .values import Outcome

__all__ = ["JobStart", "JobStarts", "Plan"]


class JobStarts(CopyJobs):
    """The commands that start block jobs."""

    # --- commit ----------------------------------------------------------------------

    @on_command("block-commit")
    @refusals
    def block_commit(self, args: Mapping[str, Any]) -> Outcome:
        active = self._root(str(args["device"]))
        self._busy(active)
        top = data_node(active)
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
            found = find_in_chain(top, str(args["top"]))
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
            found = find_in_chain(top, str(args["base"]))
            if found is None:
                raise Refused(f"Can't find '{args['base']}' in the backing chain")
            base = found
        else:
            base = list(top.chain())[-1]
        if top is base:
            raise Refused("cannot commit an image into itself")
        if top is data_node(active):
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
        overlay = next(n for n in data_node(active).chain() if n.backing is top)
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
        top = data_node(node)
        base: Node | None = None
        if args.get("base") is not None and args.get("base-node") is not None:
            raise Refused("'base' and 'base-node' cannot be specified at the same time")
        if args.get("base") is not None:
            base = find_in_chain(top, str(args["base"]))
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
