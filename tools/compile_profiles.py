"""Compile recorded QMP conversations of real QEMU builds into qmpsim's profiles.

    python tools/compile_profiles.py ../shared/qemu-qmp [--out qmpsim/profiles]

The input directory holds ``replies/caps_<version>_x86_64*.replies.xz`` (see its
README).  For every QEMU minor version from 2.5 on that has a recording, one
profile ``qemu-<major>.<minor>`` is written: its greeting (recorded, or built from
``query-version`` and the capabilities QEMU of that version offers), its
``query-qmp-schema``, the commands QEMU dispatches (``query-commands`` where it
was recorded) and every recorded reply.  Where a version has Debian's recording
and libvirt's, Debian's is the profile (qmpsim is diffed against Debian's QEMU)
and libvirt's only adds replies to requests Debian's does not have.

The output is deterministic: compiling the same input twice gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmpsim.qmp.schema import Object, problems, types_from_introspection  # noqa: E402

OLDEST = (2, 5)  # the first version with query-qmp-schema
FILE = re.compile(
    r"caps_(\d+)\.(\d+)\.(\d+)_x86_64(?:\.libvirt-[\d.]+|\+(debian|qmpsim))\.replies\.xz$"
)
# Which recording of a version is the profile: Debian's (the builds the suite diffs
# against), else libvirt's.  qmpsim's own recordings (tools/record_qmp.py) only add
# replies: they hold every argument-less query of the same Debian build.
PRIORITY = {"debian": 0, "qmpsim": 1, "libvirt": 2}
# What the compiled profile keeps elsewhere than among the recorded replies.
NOT_REPLIES = {"qmp_capabilities", "query-version", "query-commands"}
FORMAT = 1
LZMA_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass(frozen=True)
class Recording:
    path: Path
    version: tuple[int, int, int]
    kind: str  # debian, qmpsim or libvirt

    @property
    def debian(self) -> bool:
        """Recorded from a Debian build (Debian's own recordings and qmpsim's)."""
        return self.kind != "libvirt"


@dataclass(frozen=True)
class Exchange:
    session: int
    request: dict[str, Any]
    reply: dict[str, Any]
    modules: bool = False
    """Whether QEMU had loaded its modules (``qom-list-types`` was asked before)."""


def messages(path: Path) -> Iterator[Any]:
    """The JSON objects of a recording, in order: pretty-printed and blank-line
    separated (``.replies.xz``), or the libvirt probe fixture's lines of
    ``{"greeting": …}`` and ``{"request": …, "reply": …}`` (``.jsonl``)."""
    data = path.read_bytes()
    text = (lzma.decompress(data) if path.suffix == ".xz" else data).decode("utf-8")
    decoder = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return
        obj, i = decoder.raw_decode(text, i)
        if "greeting" in obj:
            yield obj["greeting"]
        elif "request" in obj:
            yield obj["request"]
            yield obj["reply"]
        else:
            yield obj


def read(path: Path) -> tuple[dict[str, Any] | None, list[Exchange]]:
    """The recorded greeting (if any) and every request with its reply."""
    greeting: dict[str, Any] | None = None
    exchanges: list[Exchange] = []
    session = -1
    modules = False
    pending: dict[str, Any] | None = None
    for obj in messages(path):
        if "QMP" in obj:
            greeting = greeting or obj
        elif "execute" in obj:
            if obj["execute"] == "qmp_capabilities":
                session += 1
                modules = False
            pending = obj
        elif ("return" in obj or "error" in obj) and pending is not None:
            if obj.get("id") != pending.get("id"):
                raise SystemExit(f"{path.name}: reply {obj.get('id')} follows {pending.get('id')}")
            exchanges.append(Exchange(session, pending, obj, modules))
            modules = modules or pending["execute"] == "qom-list-types"
            pending = None
    return greeting, exchanges


def recordings(
    *directories: Path, probes: Sequence[Path] = ()
) -> dict[tuple[int, int], list[Recording]]:
    """Per minor version, its recordings, the profile's own first."""
    out: dict[tuple[int, int], list[Recording]] = {}
    paths = sorted(p for d in directories if d.is_dir() for p in d.iterdir())
    for path in paths:
        match = FILE.match(path.name)
        if match is None:
            continue
        major, minor, micro = (int(g) for g in match.groups()[:3])
        if (major, minor) < OLDEST:
            continue
        rec = Recording(path, (major, minor, micro), match.group(4) or "libvirt")
        out.setdefault((major, minor), []).append(rec)
    for path in probes:
        # libvirt's probe of a Debian build, as tools/record_libvirt_probe.py keeps it
        greeting = next(messages(path))
        qemu = greeting["QMP"]["version"]["qemu"]
        rec = Recording(path, (qemu["major"], qemu["minor"], qemu["micro"]), "qmpsim")
        out.setdefault((qemu["major"], qemu["minor"]), []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: (PRIORITY[r.kind], [-v for v in r.version]))
    return dict(sorted(out.items()))


def kvm_of(exchanges: list[Exchange], session: int, debian: bool) -> bool:
    """Whether a session ran with KVM: libvirt probes with KVM first, then with TCG."""
    for ex in exchanges:
        if ex.session == session and ex.request["execute"] == "query-kvm":
            return bool(ex.reply.get("return", {}).get("enabled"))
    return debian or session == 0


def machine_of(session: int, debian: bool) -> str:
    """The machine type a session ran: a Debian build's second and third sessions are
    ``-M pc`` VMs (tools/record_qmp.py)."""
    return "pc" if debian and session >= 1 else "none"


def compile_profile(recs: list[Recording]) -> dict[str, Any]:
    primary = recs[0]
    greeting, exchanges = read(primary.path)
    version_reply = next(
        ex.reply["return"] for ex in exchanges if ex.request["execute"] == "query-version"
    )
    schema = next(
        ex.reply["return"] for ex in exchanges if ex.request["execute"] == "query-qmp-schema"
    )
    qemu = version_reply["qemu"]
    version = (qemu["major"], qemu["minor"], qemu["micro"])
    if greeting is None:
        # QEMU offers out-of-band execution from 2.12 on (monitor_qmp_caps_reset)
        caps = ["oob"] if version[:2] >= (2, 12) else []
        greeting = {"QMP": {"version": version_reply, "capabilities": caps}}
    commands = next(
        (
            [c["name"] for c in ex.reply["return"]]
            for ex in exchanges
            if ex.request["execute"] == "query-commands"
        ),
        None,
    )
    resolve = types_from_introspection(schema)
    returns = {e["name"]: resolve(e["ret-type"]) for e in schema if e["meta-type"] == "command"}
    available = set(commands) if commands is not None else set(returns)
    dropped: list[str] = []
    replies: list[list[Any]] = []
    after_modules: list[list[Any]] = []
    seen: dict[str, tuple[dict[str, Any], bool]] = {}  # the reply kept, given after modules
    after_seen: set[str] = set()
    for rec in recs:
        _, exs = (greeting, exchanges) if rec is primary else read(rec.path)
        for ex in exs:
            command = ex.request["execute"]
            if command in NOT_REPLIES:
                continue
            arguments = ex.request.get("arguments")
            kvm = kvm_of(exs, ex.session, rec.debian)
            machine = machine_of(ex.session, rec.debian)
            key = json.dumps([command, arguments, kvm, machine], sort_keys=True)
            reply = {k: v for k, v in ex.reply.items() if k != "id"}
            if key in seen:
                # the same request once QEMU had loaded its modules: kept when it differs
                kept, kept_after_modules = seen[key]
                same_build = rec.version == primary.version and rec.debian == primary.debian
                loaded_since = ex.modules and not kept_after_modules
                if loaded_since and same_build and reply != kept and key not in after_seen:
                    after_seen.add(key)
                    after_modules.append([command, arguments, kvm, machine, reply])
                continue
            if "return" in reply and command in returns:
                found = next(problems(returns[command], reply["return"]), None)
                if found is not None:
                    # libvirt edits old recordings by hand now and then; a reply that
                    # this build's own schema rules out is not what it would send.
                    dropped.append(f"{rec.path.name}: {command} ({found.kind} {found.path})")
                    continue
            if rec is not primary and command not in available:
                continue
            seen[key] = (reply, ex.modules)
            replies.append([command, arguments, kvm, machine, reply])
    for line in dropped:
        print(f"  dropped a reply that does not fit the schema: {line}", file=sys.stderr)
    events = [e["name"] for e in schema if e["meta-type"] == "event"]
    # Every event's data type must resolve (an object, or none).
    for e in schema:
        if e["meta-type"] == "event":
            assert isinstance(resolve(e["arg-type"]), Object)
    return {
        "format": FORMAT,
        # named by the release it was recorded for; a few are release candidates
        # (2.12.0-rc0 says 2.11.90), whose version the profile keeps
        "name": f"qemu-{primary.version[0]}.{primary.version[1]}",
        "version": list(version),
        "package": version_reply["package"],
        "greeting": greeting,
        "recordings": [r.path.name.removesuffix(".xz") for r in recs],
        "commands": commands,
        "events": events,
        "schema": schema,
        "replies": replies,
        # what QEMU answered instead once it had loaded its modules (qom-list-types)
        "after_modules": after_modules,
    }


# Queries whose answer lists what one build has (its machine types, CPU models,
# options, events…): another version's list would be wrong even where it fits.
CATALOGUES = {
    "query-events",
    "query-machines",
    "query-cpu-definitions",
    "query-command-line-options",
    "query-migrate-capabilities",
    "query-chardev-backends",
    "query-tpm-models",
    "query-tpm-types",
    "query-accelerators",
    "query-audiodevs",
    "query-stats-schemas",
}


def borrow(profiles: list[dict[str, Any]]) -> None:
    """Give each profile, for the argument-less queries its recordings did not ask,
    the reply the nearest recorded version gave, where it fits this version's return
    type (``query-migrate`` idle is ``{}`` in every version).  Such a reply is marked
    with the profile it comes from.  Only successes are borrowed (error texts
    change), and no catalogue of what a build has (CATALOGUES)."""
    own = [{r[0] for r in p["replies"] if len(r) == 5} for p in profiles]
    for index, profile in enumerate(profiles):
        resolve = types_from_introspection(profile["schema"])
        entries = {e["name"]: e for e in profile["schema"] if e["meta-type"] == "command"}
        available = profile["commands"] or list(entries)
        nearest = sorted(
            (i for i in range(len(profiles)) if i != index),
            key=lambda i: (abs(i - index), -i),
        )
        for command in available:
            entry = entries.get(command)
            if entry is None or not command.startswith("query-") or command in CATALOGUES:
                continue
            if command in own[index]:
                continue
            arguments = resolve(entry["arg-type"])
            assert isinstance(arguments, Object)
            if any(not f.optional for f in arguments.fields):
                continue
            returns = resolve(entry["ret-type"])
            for machine in ("none", "pc"):
                for donor in nearest:
                    reply = next(
                        (
                            r
                            for r in profiles[donor]["replies"]
                            if r[0] == command
                            and r[1] is None
                            and r[3] == machine
                            and len(r) == 5
                            and "return" in r[4]
                        ),
                        None,
                    )
                    if (
                        reply is not None
                        and next(problems(returns, reply[4]["return"]), None) is None
                    ):
                        profile["replies"].append([*reply, profiles[donor]["name"]])
                        break


def encode(data: Any) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return lzma.compress(text.encode("utf-8"), format=lzma.FORMAT_XZ, preset=LZMA_PRESET)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the qemu-qmp directory (with replies/)")
    parser.add_argument(
        "--own",
        type=Path,
        default=ROOT / "recordings",
        help="qmpsim's own recordings (tools/record_qmp.py; default: recordings/)",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        action="append",
        help="a libvirt probe recorded by tools/record_libvirt_probe.py (repeatable; default:"
        " tests/data/libvirt-probe-qemu-*.jsonl)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "qmpsim" / "profiles")
    args = parser.parse_args(argv)
    if not (args.source / "replies").is_dir():
        print(f"{args.source}: no replies/ directory here", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {}
    probes = args.probe
    if probes is None:
        probes = sorted((ROOT / "tests" / "data").glob("libvirt-probe-qemu-*.jsonl"))
    found = recordings(args.source / "replies", args.own, probes=probes)
    profiles = [compile_profile(recs) for recs in found.values()]
    borrow(profiles)
    for profile in profiles:
        name = profile["name"]
        (args.out / f"{name}.json.xz").write_bytes(encode(profile))
        qmp = profile["greeting"]["QMP"]
        index[name] = {
            "version": profile["version"],
            "package": profile["package"],
            "capabilities": qmp["capabilities"],
            "recordings": profile["recordings"],
        }
        dispatched = profile["commands"] or [
            e for e in profile["schema"] if e["meta-type"] == "command"
        ]
        print(
            f"{name}: {len(dispatched)} dispatched commands,"
            f" {len(profile['events'])} events, {len(profile['replies'])} recorded replies"
            f" ({sum(len(r) > 5 for r in profile['replies'])} from other versions)",
            file=sys.stderr,
        )
    text = json.dumps({"format": FORMAT, "profiles": index}, indent=1, ensure_ascii=False)
    (args.out / "index.json").write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
