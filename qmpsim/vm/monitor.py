"""What the monitor says of QEMU and the VM itself: identity queries and HMP.

``query-version``, ``query-commands``, ``query-name``, ``query-uuid``,
``query-kvm``, and ``human-monitor-command``: the few HMP commands qmpsim
answers (``info`` about the VM, and the run control commands, which do what
their QMP twins do and print QEMU's error texts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .balloon import Balloon
from .component import Component, on_command
from .power import Power
from .runstate import RunState
from .values import CommandError, Outcome

# the `info` subcommands qmpsim answers, with QEMU's help texts
_HMP_INFO = {
    "balloon": "show balloon information",
    "kvm": "show KVM information",
    "name": "show the current VM name",
    "status": "show the current VM status (running|paused)",
    "uuid": "show the current VM UUID",
    "version": "show the version of QEMU",
}


class Monitor(Component):
    """The monitor's answers about QEMU and the VM, and HMP over QMP."""

    @on_command("query-version")
    def query_version(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome(self.host.profile.greeting()["QMP"]["version"])

    @on_command("query-commands")
    def query_commands(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome([{"name": name} for name in self.host.profile.commands])

    @on_command("query-name")
    def query_name(self, _args: Mapping[str, Any]) -> Outcome:
        name = self.host.vm.name
        return Outcome({} if name is None else {"name": name})

    @on_command("query-uuid")
    def query_uuid(self, _args: Mapping[str, Any]) -> Outcome:
        return Outcome({"UUID": self.host.vm.uuid})

    @on_command("query-kvm")
    def query_kvm(self, _args: Mapping[str, Any]) -> Outcome:
        vm = self.host.vm
        return Outcome({"enabled": vm.kvm_enabled, "present": vm.kvm_present})

    @on_command("human-monitor-command")
    def human_monitor_command(self, args: Mapping[str, Any]) -> Outcome:
        line = str(args.get("command-line", ""))
        cpu = args.get("cpu-index")
        if cpu is not None and not 0 <= cpu < self.host.vm.cpus:
            return Outcome(
                CommandError("GenericError", "Parameter 'cpu-index' expects a CPU number")
            )
        words = line.split()
        if not words:
            return Outcome("")
        run_control = self._run_control()
        if words[0] in run_control and len(words) == 1:
            outcome = run_control[words[0]]({})
            if isinstance(outcome.reply, CommandError):
                return Outcome(f"Error: {outcome.reply.desc}\r\n", outcome.events)
            return Outcome("", outcome.events)
        what = " ".join(words[1:]) if words[0] == "info" and len(words) <= 2 else None
        info = self._info(what)
        if info is not None:
            return Outcome(info)
        if words[0] == "info" and words[1] in _HMP_INFO:
            # none of these takes an argument: QEMU's parser stops at the first one
            return Outcome(
                f"{words[1]}: extraneous characters at the end of line\r\n"
                f'Try "help info {words[1]}" for more information\r\n'
            )
        match = re.match(r"\s*(info\s+\S+|\S+)", line)
        name = match.group(1) if match else line
        return Outcome(f"unknown command: '{name}'\r\n")

    def _run_control(self) -> dict[str, Callable[[Mapping[str, Any]], Outcome]]:
        power = self.host.part(Power)
        return {
            "stop": power.stop,
            "cont": power.cont,
            "c": power.cont,
            "system_reset": power.system_reset,
            "system_powerdown": power.system_powerdown,
        }

    def _info(self, what: str | None) -> str | None:
        host = self.host
        if what == "":
            return "".join(f"info {name}  -- {text}\r\n" for name, text in _HMP_INFO.items())
        if what == "status":
            text = "VM status: " + ("running" if host.running else "paused")
            if host.profile.run_states and host.status not in (
                RunState.RUNNING,
                RunState.PAUSED,
            ):
                text += f" ({host.status})"
            return text + "\r\n"
        if what == "version":
            major, minor, micro = host.profile.version
            return f"{major}.{minor}.{micro}{host.profile.package}\r\n"
        if what == "name":
            return "" if host.vm.name is None else f"{host.vm.name}\r\n"
        if what == "uuid":
            return f"{host.vm.uuid}\r\n"
        if what == "balloon":
            actual = host.part(Balloon).actual()
            if actual is None:
                return "Error: No balloon device has been activated\r\n"
            return f"balloon: actual={actual >> 20}\r\n"
        if what == "kvm":
            state = "enabled" if host.vm.kvm_enabled else "disabled"
            return f"kvm support: {state}\r\n"
        return None
