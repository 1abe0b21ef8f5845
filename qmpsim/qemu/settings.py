"""Per-guest settings of the drop-in, and the run directory of its control sockets.

A launcher such as libvirt runs the emulator with a cleared environment, so the
drop-in reads its settings from files in a fixed place, chosen by the guest's
name (``-name guest=NAME``)::

    /etc/qmpsim/default.toml      what every guest gets
    /etc/qmpsim/NAME.toml         this guest's keys, over the default's

``QMPSIM_CONFIG_DIR`` replaces ``/etc/qmpsim`` for launchers that keep the
environment.  Keys: ``profile`` (which QEMU to speak like), ``scenario`` (a
shipped name, or a file path relative to the settings file), ``seed``,
``speed``, ``run_dir``, and a ``[guest]`` table (how the guest OS reacts:
``powerdown = "ignore"`` makes it a guest that ignores the power button).

Each running VM serves its control channel on ``RUN_DIR/NAME.sock``.  RUN_DIR is
``QMPSIM_RUN_DIR`` when set, else the first of these the VM can use: ``run_dir``
from the settings, ``/run/qmpsim``, ``$XDG_RUNTIME_DIR/qmpsim``,
``/tmp/qmpsim-UID``; ``qmpsim ctl`` looks for the socket in the same places.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QmpSimError

__all__ = [
    "CONFIG_DIR",
    "GuestSettings",
    "SettingsError",
    "config_dir",
    "control_socket",
    "load_settings",
    "run_dirs",
]

CONFIG_DIR = "/etc/qmpsim"
_KEYS: dict[str, type | tuple[type, ...]] = {
    "profile": str,
    "guest": dict,
    "scenario": str,
    "seed": int,
    "speed": (int, float),
    "run_dir": str,
}


_EXPECTED = {
    "guest": "a table",
    "profile": "a string",
    "scenario": "a string",
    "seed": "an integer",
}
_EXPECTED["run_dir"] = "a string"


class SettingsError(QmpSimError):
    """A settings file that cannot be used: the file and what is wrong in it."""


@dataclass(frozen=True)
class GuestSettings:
    """What the drop-in plays for one guest."""

    profile: str | None = None
    scenario: str | None = None
    seed: int | None = None
    speed: float = 1.0
    run_dir: str | None = None
    guest: dict[str, Any] | None = None
    """How the guest OS reacts (``GuestConfig``'s fields): the scenario's, else a
    cooperative guest, when absent."""
    sources: tuple[str, ...] = ()
    """The files these settings were read from."""


def config_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the settings files are: ``QMPSIM_CONFIG_DIR``, else ``/etc/qmpsim``."""
    env = os.environ if environ is None else environ
    return Path(env.get("QMPSIM_CONFIG_DIR") or CONFIG_DIR)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    for key, value in data.items():
        kind = _KEYS.get(key)
        if kind is None:
            known = ", ".join(_KEYS)
            raise SettingsError(f"{path}: unknown key {key!r} (keys: {known})")
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = _EXPECTED.get(key, "a number")
            raise SettingsError(f"{path}: {key} must be {expected}, not {value!r}")
    scenario = data.get("scenario")
    if isinstance(scenario, str) and ("/" in scenario or scenario.endswith(".yaml")):
        data["scenario"] = str(path.parent / scenario)  # relative to the file naming it
    data["sources"] = (str(path),)
    return data


def _valid_name(name: str | None) -> bool:
    return bool(name) and "/" not in str(name) and not str(name).startswith(".")


def load_settings(guest: str | None, environ: dict[str, str] | None = None) -> GuestSettings:
    """The settings of ``guest``: its file's keys over the default file's."""
    base = config_dir(environ)
    merged = _read(base / "default.toml")
    if _valid_name(guest):
        own = _read(base / f"{guest}.toml")
        sources = merged.get("sources", ()) + own.get("sources", ())
        if "guest" in merged and "guest" in own:  # a guest's keys over the default guest's
            own = {**own, "guest": {**merged["guest"], **own["guest"]}}
        merged |= own
        merged["sources"] = sources
    merged["sources"] = tuple(merged.get("sources", ()))
    if "speed" in merged:
        merged["speed"] = float(merged["speed"])
        if not merged["speed"] > 0:
            raise SettingsError(f"{merged['sources'][-1]}: speed must be a positive number")
    return GuestSettings(**merged)


def run_dirs(
    settings: GuestSettings | None = None, environ: dict[str, str] | None = None
) -> list[Path]:
    """The candidate run directories, in the order they are tried (see the module's
    documentation)."""
    env = os.environ if environ is None else environ
    if env.get("QMPSIM_RUN_DIR"):
        return [Path(env["QMPSIM_RUN_DIR"])]
    out = [Path(settings.run_dir)] if settings is not None and settings.run_dir else []
    out.append(Path("/run/qmpsim"))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "qmpsim")
    out.append(Path(f"/tmp/qmpsim-{os.getuid()}"))
    return out


def control_socket(directory: Path, guest: str | None) -> Path:
    """The control socket of ``guest`` (an unnamed VM is ``qemu-PID``)."""
    name = guest if _valid_name(guest) else f"qemu-{os.getpid()}"
    return directory / f"{name}.sock"
