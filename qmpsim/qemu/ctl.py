"""``qmpsim ctl``: drive a running drop-in VM through its control socket.

The socket is ``RUN_DIR/GUEST.sock`` (see :mod:`qmpsim.qemu.settings`); it speaks
the control channel's protocol (``qmpsim-*`` commands, QMP framing).  This
module turns a shell command line into one control command and runs it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import QmpSimError
from .settings import control_socket, load_settings, run_dirs

__all__ = ["ACTIONS", "CtlError", "find_socket", "guests", "request_for", "send"]

ACTIONS = {
    "cause": "cause KIND [KEY=VALUE…]: make something happen (disk-error, watchdog, …)",
    "emit": "emit EVENT [KEY=VALUE…|'{DATA}']: send one event with this data",
    "run": "run STEP…: run scenario steps, each written as YAML (e.g. '{wait: 1s}')",
    "trigger": "trigger ACTION: run one of the scenario's named actions",
    "status": "status: the run state, clients and timeline",
    "transcript": "transcript: every message the monitors exchanged, as JSON lines",
    "reset": "reset: a fresh VM; the scenario restarts",
}
_TIMEOUT = 10.0


class CtlError(QmpSimError):
    """A ctl command that cannot be sent, or that the VM refused."""


def _value(text: str) -> Any:
    """A ``KEY=VALUE`` value: YAML's scalars (``true``, ``3``, ``1.5s`` stays a string)."""
    import yaml

    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def _pairs(words: Sequence[str], types: dict[str, str] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` words as a mapping; a key ``types`` says is a string stays one."""
    out: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise CtlError(f"{word!r}: expected KEY=VALUE")
        out[key] = value if (types or {}).get(key) == "string" else _value(value)
    return out


def _cause_types(kind: str) -> dict[str, str]:
    """The JSON types of a cause's keys, from the scenario language's schema."""
    from qmpsim.scenario.json_schema import scenario_schema

    for step in scenario_schema()["$defs"]["step"]["oneOf"]:
        props = step.get("properties", {})
        if props.get("cause", {}).get("const") == kind:
            return {k: v.get("type", "") for k, v in props.items()}
    return {}


def request_for(action: str, words: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The control command (name, arguments) for ``qmpsim ctl GUEST ACTION WORDS…``."""
    if action == "cause":
        if not words:
            raise CtlError("cause needs a KIND, e.g. `cause disk-error device=virtio-disk0`")
        step = {"cause": words[0], **_pairs(words[1:], _cause_types(words[0]))}
        return "qmpsim-run", {"steps": [step]}
    if action == "emit":
        if not words:
            raise CtlError("emit needs an EVENT name, e.g. `emit RTC_CHANGE offset=10`")
        args: dict[str, Any] = {"event": words[0]}
        if len(words) == 2 and words[1].startswith("{"):
            args["data"] = _value(words[1])  # the data as a YAML/JSON mapping: exact types
        elif len(words) > 1:
            args["data"] = _pairs(words[1:])
        return "qmpsim-emit", args
    if action == "run":
        if not words:
            raise CtlError("run needs at least one STEP, e.g. `run '{wait: 1s}'`")
        return "qmpsim-run", {"steps": [_value(w) for w in words]}
    if action == "trigger":
        if len(words) != 1:
            raise CtlError("trigger needs exactly one ACTION name")
        return "qmpsim-trigger", {"action": words[0]}
    if action in ("status", "transcript", "reset"):
        if words:
            raise CtlError(f"{action} takes no arguments")
        return f"qmpsim-{action}", {}
    raise CtlError(f"unknown action {action!r}; actions: {', '.join(ACTIONS)}")


def find_socket(guest: str, run_dir: str | None = None) -> Path:
    """The control socket of ``guest``: in ``run_dir``, else in the run directories the
    drop-in uses (its settings included)."""
    candidates = [Path(run_dir)] if run_dir is not None else run_dirs(load_settings(guest))
    for directory in candidates:
        path = control_socket(directory, guest)
        if path.exists():
            return path
    looked = ", ".join(str(d) for d in candidates)
    raise CtlError(f"no running VM named {guest!r} (looked in {looked})")


def guests(run_dir: str | None = None) -> list[str]:
    """The names of the VMs with a control socket, in every run directory."""
    directories = [Path(run_dir)] if run_dir is not None else run_dirs()
    found: set[str] = set()
    for directory in directories:
        if directory.is_dir():
            found.update(p.stem for p in directory.glob("*.sock") if p.is_socket())
    return sorted(found)


def _read_message(reader: Any) -> dict[str, Any]:
    line = reader.readline()
    if not line:
        raise CtlError("the VM closed its control socket")
    message: dict[str, Any] = json.loads(line)
    return message


def send(path: Path, command: str, arguments: dict[str, Any]) -> Any:
    """Run one control command on the socket at ``path``; its return value."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise CtlError(f"cannot reach {path}: {exc.strerror or exc}") from None
        reader = sock.makefile("rb")
        _read_message(reader)  # the greeting
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        sock.sendall(json.dumps({"execute": "qmp_capabilities"}).encode())
        _read_message(reader)
        sock.sendall(json.dumps(request).encode())
        reply = _read_message(reader)
    if "error" in reply:
        raise CtlError(reply["error"]["desc"])
    return reply.get("return")
