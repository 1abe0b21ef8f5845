"""A scenario from a recording: what a real QEMU did, as a file ``qmpsim serve`` plays.

The recorded client's requests become ``until`` steps, so the timeline follows
the client as the recording did.  Each event the recording holds is explained,
in order, by the simulated machine where it can be:

- events a command produces (STOP before ``stop``'s reply) need no step: the
  machine produces them when the client sends the command;
- an event (or a run of them) that a cause produces exactly, data included,
  becomes a ``cause`` step, so the VM's state follows it (a disk error that stops
  the VM makes ``query-status`` say ``io-error``);
- any other event becomes an ``emit`` step with the recorded data.

A command the machine answers differently from the recording (another reply, or
other events) gets a ``reply`` step for each time it was sent, in order, and its
recorded events become steps after its ``until``; the machine then never runs
it.  ``wait`` steps keep the recorded delays.  The VM section is inferred from
what the recording shows: the name, the run state at start, the disks and error
policies of BLOCK_IO_ERROR, the watchdog action, the VNC and SPICE servers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qmpsim.qmp.cassette import Cassette, Exchange, RecordedEvent, profile_for
from qmpsim.qmp.profiles import ProfileSpec, validate_event
from qmpsim.scenario.dryrun import build_machine
from qmpsim.scenario.loader import loads_scenario
from qmpsim.scenario.text import dump_yaml
from qmpsim.vm import machine as m
from qmpsim.vm.block_errors import ErrorAction
from qmpsim.vm.watchdog import WATCHDOG_ACTIONS

__all__ = ["Derived", "derive_scenario"]

_STATES = ("running", "paused", "prelaunch")
# a BLOCK_IO_ERROR's action that is also the disk's policy for that operation
_POLICIES = tuple(ErrorAction)


@dataclass
class Derived:
    """A scenario document made from a recording, and notes on what it could not keep."""

    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_yaml(self, source: str) -> str:
        """The scenario as a YAML file, its header saying where it came from."""
        header = [
            f"Made by `qmpsim scenario-from {source}`: the recorded client's requests are",
            "`until` steps, events the simulated VM explains are `cause` steps, other",
            "events `emit` steps, replies the simulator would not give `reply` steps.",
        ]
        if self.notes:
            header += ["", "Not kept:", *(f"- {note}" for note in self.notes)]
        return dump_yaml(self.document, header=header)


def derive_scenario(cassette: Cassette, *, name: str = "recorded") -> Derived:
    """The scenario that plays back what ``cassette`` recorded (see the module doc)."""
    greeting = next((s.greeting for s in cassette.sessions if s.greeting), None)
    profile = profile_for(greeting)
    doc: dict[str, Any] = {
        "name": name,
        "description": f"recorded from {cassette.source}",
        "profile": profile.name,
    }
    vm = _infer_vm(cassette)
    if vm:
        doc["vm"] = vm
    overridden: set[str] = set()
    while True:
        # Each pass overrides the first command the model gets wrong: later
        # disagreements may only follow from that one.
        builder = _Builder(cassette, profile, {**doc, "steps": []}, overridden)
        steps = builder.build()
        if builder.divergent is None:
            break
        overridden.add(builder.divergent)
    doc["steps"] = steps
    return Derived(doc, builder.notes)


# --- the VM section --------------------------------------------------------------------


def _infer_vm(cassette: Cassette) -> dict[str, Any]:
    vm: dict[str, Any] = {}
    disks: dict[str, dict[str, Any]] = {}
    exchanges = [e for s in cassette.sessions for e in s.exchanges]
    for exchange in exchanges:
        value = _returned(exchange)
        if exchange.command == "query-name" and isinstance(value, dict):
            if isinstance(value.get("name"), str):
                vm.setdefault("name", value["name"])
        elif (
            exchange.command == "query-status"
            and isinstance(value, dict)
            and value.get("status") in _STATES
            and not _changed_state_before(exchanges, exchange)
        ):
            vm.setdefault("initial_state", value["status"])
    events = [e for s in cassette.sessions for e in s.events()]
    for index, recorded in enumerate(events):
        data = recorded.message.get("data")
        data = data if isinstance(data, dict) else {}
        if recorded.name == "BLOCK_IO_ERROR" and isinstance(data.get("device"), str):
            disk = disks.setdefault(data["device"], {"name": data["device"]})
            action = data.get("action")
            key = "on_write_error" if data.get("operation") == "write" else "on_read_error"
            if action in _POLICIES and key not in disk:
                disk[key] = action
        elif recorded.name == "WATCHDOG" and data.get("action") in WATCHDOG_ACTIONS:
            vm.setdefault("watchdog", data["action"])
        elif recorded.name.startswith("VNC_"):
            vm.setdefault("vnc", _server(data.get("server"), "service"))
        elif recorded.name.startswith("SPICE_"):
            vm.setdefault("spice", _server(data.get("server"), "port"))
        elif recorded.name == "SHUTDOWN" and data.get("guest") is True:
            following = events[index + 1] if index + 1 < len(events) else None
            if following is not None and following.name == "STOP":
                vm["no_shutdown"] = True
    if disks:
        vm["disks"] = list(disks.values())
    return {k: v for k, v in vm.items() if v is not None}


def _changed_state_before(exchanges: Sequence[Exchange], exchange: Exchange) -> bool:
    for earlier in exchanges:
        if earlier is exchange:
            return False
        if earlier.command in ("stop", "cont", "system_reset") or earlier.events or earlier.after:
            return True
    return False


def _server(server: Any, port_key: str) -> dict[str, Any] | None:
    if not isinstance(server, dict):
        return None
    out: dict[str, Any] = {}
    if isinstance(server.get("host"), str):
        out["host"] = server["host"]
    port = server.get(port_key)
    if isinstance(port, str) and port.isdigit():
        out["port"] = int(port)
    if server.get("family") in ("ipv4", "ipv6", "unix"):
        out["family"] = server["family"]
    if isinstance(server.get("auth"), str):
        out["auth"] = server["auth"]
    return out


def _returned(exchange: Exchange) -> Any:
    reply = exchange.reply
    return reply.get("return") if reply is not None else None


# --- the timeline ------------------------------------------------------------------------


class _Builder:
    """One pass over the recording with a model machine, overriding ``overridden`` commands."""

    def __init__(
        self,
        cassette: Cassette,
        profile: ProfileSpec,
        document: dict[str, Any],
        overridden: set[str],
    ) -> None:
        self.cassette = cassette
        self.profile = profile
        self.clock = m.ManualClock(0.0)
        self.machine = build_machine(loads_scenario(_json(document)), clock=self.clock)
        self.overridden = overridden
        self.divergent: str | None = None
        """The first command the model answered otherwise than the recording."""
        self.notes: list[str] = []
        self.replies: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def build(self) -> list[dict[str, Any]]:
        sessions = self.cassette.sessions
        self.base = sessions[0].start if sessions else 0.0
        for session in sessions:
            self.timed(session.start, session.opening)
            for exchange in session.exchanges:
                self.advance(exchange.time)
                self.exchange(exchange)
        return [*self.replies, *self.steps]

    def advance(self, when: float) -> None:
        """The model's clock to the recorded time ``when`` (it throttles events by it)."""
        self.clock.now = max(self.clock.now, when - self.base)

    def exchange(self, exchange: Exchange) -> None:
        reply = exchange.reply
        if reply is None:
            return
        if exchange.command not in self.profile.commands:
            error = reply.get("error")
            if not (isinstance(error, dict) and error.get("class") == "CommandNotFound"):
                self.note(
                    f"{exchange.command}: not in profile {self.profile.name}, "
                    "so the simulator answers CommandNotFound"
                )
            self.timed(exchange.time, exchange.events, exchange.after)
            return
        until: dict[str, Any] = {"until": exchange.command}
        if exchange.arguments:
            until["arguments"] = dict(exchange.arguments)
        self.steps.append(until)
        if exchange.command in self.overridden:
            self.replies.append(_reply_step(exchange.command, reply))
            self.timed(exchange.time, exchange.events, exchange.after)
            return
        explained = self.run_command(exchange, reply)
        if explained is None:
            if self.divergent is None:
                self.divergent = exchange.command
            explained = 0
        self.timed(exchange.time, exchange.events[explained:], exchange.after)

    def run_command(self, exchange: Exchange, reply: Mapping[str, Any]) -> int | None:
        """Run the command on the model: how many of the recorded events it produced
        (they come first), or ``None`` when its reply or events are not the recorded ones."""
        if self.machine.exited:
            return None
        try:
            outcome = self.machine.execute(exchange.command, exchange.arguments)
        except m.MachineError:
            return None
        answer = outcome.reply
        if isinstance(answer, m.CommandError):
            same = reply.get("error") == {"class": answer.error_class, "desc": answer.desc}
        else:
            same = "return" in reply and _equal(reply["return"], answer)
        produced = [(e.name, e.to_json().get("data")) for e in outcome.events]
        recorded = [(e.name, e.message.get("data")) for e in exchange.events[: len(produced)]]
        return len(produced) if same and _equal(produced, recorded) else None

    def timed(self, anchor: float, *groups: Sequence[RecordedEvent]) -> None:
        """Steps for events that came ``delay`` after ``anchor``, with the waits between."""
        events = [e for group in groups for e in group]
        elapsed = 0.0
        index = 0
        while index < len(events):
            delay = events[index].delay - elapsed
            if delay >= 0.001:
                self.steps.append({"wait": round(delay, 3)})
                elapsed = events[index].delay
            self.advance(anchor + events[index].delay)
            index += self.explain(events, index)

    def explain(self, events: Sequence[RecordedEvent], index: int) -> int:
        """One step for ``events[index]`` (and those that follow from the same cause);
        how many events it stands for."""
        for kind, keys, cause in _candidates(events[index].message):
            trial = copy.deepcopy(self.machine)
            if trial.cause_error(cause) is not None:
                continue
            produced = [(e.name, e.to_json().get("data")) for e in trial.cause(cause)]
            following = events[index : index + len(produced)]
            wanted = [(e.name, e.message.get("data")) for e in following]
            if produced and _equal(produced, wanted):
                self.machine = trial
                self.steps.append({"cause": kind, **keys})
                return len(produced)
        message = events[index].message
        problems = validate_event(self.profile, message)
        if problems:
            self.note(f"event {events[index].name}: {'; '.join(problems)}")
            return 1
        step: dict[str, Any] = {"emit": events[index].name}
        if message.get("data") is not None:
            step["data"] = message["data"]
        self.steps.append(step)
        return 1

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _reply_step(command: str, reply: Mapping[str, Any]) -> dict[str, Any]:
    step: dict[str, Any] = {"reply": command}
    error = reply.get("error")
    if isinstance(error, dict):
        step["error"] = {"class": error.get("class"), "desc": error.get("desc", "")}
    else:
        step["return"] = reply.get("return")
    step["times"] = "once"
    return step


def _candidates(message: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], m.Cause]]:
    """The causes that could have produced this event, with their scenario keys."""
    name = message.get("event")
    data = message.get("data")
    data = data if isinstance(data, dict) else {}
    if name == "BLOCK_IO_ERROR" and isinstance(data.get("device"), str):
        keys: dict[str, Any] = {"device": data["device"]}
        if data.get("operation") == "write":
            keys["operation"] = "write"
        if data.get("nospace") is True:
            keys["nospace"] = True
        yield "disk-error", keys, m.DiskError(**keys)
    elif name == "WATCHDOG" and data.get("action") in WATCHDOG_ACTIONS:
        yield "watchdog", {}, m.WatchdogExpired()
        yield "watchdog", {"action": data["action"]}, m.WatchdogExpired(data["action"])
    elif name == "RTC_CHANGE" and isinstance(data.get("offset"), int):
        yield "rtc-change", {"offset": data["offset"]}, m.RtcChange(data["offset"])
    elif name == "SHUTDOWN" and data.get("guest") is True:
        yield "guest-shutdown", {}, m.GuestShutdown()
    elif name == "RESET" and data.get("guest") is True:
        yield "guest-reset", {}, m.GuestReset()
    elif name == "GUEST_PANICKED":
        yield "guest-panic", {}, m.GuestPanic()
    elif name == "GUEST_CRASHLOADED":
        yield "guest-crashloaded", {}, m.GuestCrashLoaded()
    elif name == "POWERDOWN":
        yield "guest-powerdown", {}, m.GuestPowerdown()
    elif name is not None and name.startswith(("VNC_", "SPICE_")):
        yield from _display_candidates(name, data)


def _display_candidates(
    name: str, data: Mapping[str, Any]
) -> Iterator[tuple[str, dict[str, Any], m.Cause]]:
    client = data.get("client")
    client = client if isinstance(client, dict) else {}
    host, family = client.get("host"), client.get("family")
    if name.startswith("VNC_"):
        label = f"{host}:{client.get('service')}"
        address = {
            k: v for k, v in (("host", host), ("service", client.get("service"))) if v is not None
        }
        if family is not None:
            address["family"] = family
        if name == "VNC_CONNECTED":
            yield "vnc-connect", {"client": label, **address}, m.VncConnect(label, **address)
        elif name == "VNC_INITIALIZED":
            extra = {k: client[k] for k in ("x509_dname", "sasl_username") if k in client}
            yield "vnc-initialize", {"client": label, **extra}, m.VncInitialize(label, **extra)
        elif name == "VNC_DISCONNECTED":
            yield "vnc-disconnect", {"client": label}, m.VncDisconnect(label)
        return
    label = f"{host}:{client.get('port')}"
    channel = {
        "channel_type": client.get("channel-type", 1),
        "channel_id": client.get("channel-id", 0),
    }
    if name == "SPICE_CONNECTED":
        address = {k: v for k, v in (("host", host), ("port", client.get("port"))) if v is not None}
        if family is not None:
            address["family"] = family
        keys = {"client": label, **channel, **address}
        yield "spice-connect", keys, m.SpiceConnect(**keys)
    elif name == "SPICE_INITIALIZED":
        keys = {"client": label, **channel}
        yield "spice-initialize", keys, m.SpiceInitialize(**keys)
    elif name == "SPICE_DISCONNECTED":
        keys = {"client": label, **channel}
        yield "spice-disconnect", keys, m.SpiceDisconnect(**keys)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality (tuples are lists; a bool is not a number)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def _json(document: Mapping[str, Any]) -> str:
    import json

    return json.dumps(document)
