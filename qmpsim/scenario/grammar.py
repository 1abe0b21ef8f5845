"""The scenario grammar: one table of definitions (``_STEP_KEYS``, ``_CAUSES``, ``_VM``,
``_TOP``) that the loader validates with and the JSON Schema is generated from, so the
two never drift.  Its parts: the kinds of value (:mod:`~qmpsim.scenario.grammar_kinds`),
the ``vm`` section (:mod:`~qmpsim.scenario.grammar_vm`), the causes
(:mod:`~qmpsim.scenario.grammar_causes`); here, the steps, faults and the document."""

from __future__ import annotations

from qmpsim.qmp.profiles import PROFILES
from qmpsim.scenario.grammar_causes import _CAUSES
from qmpsim.scenario.grammar_kinds import (
    _BOOL,
    _COMMAND,
    _NAME,
    _STR,
    _TIMES,
    _Count,
    _Duration,
    _Json,
    _Key,
    _Kind,
    _Obj,
    _Scalar,
    _Steps,
    _StepsMap,
)
from qmpsim.scenario.grammar_vm import _VM

# fault kind -> (its keys, one-line description)
_FAULTS: dict[str, tuple[tuple[_Key, ...], str]] = {
    "disconnect": ((), "close every client connection"),
    "garbage": (
        (_Key("text", _STR, doc="The bytes to send (default `}garbage{`), then CRLF."),),
        "send a line that is not JSON",
    ),
    "error-without-id": ((), "send an error reply that carries no id"),
    "unknown-id-reply": ((), "send a reply whose id no request used"),
    "split": (
        (_Key("chunk", _Scalar("int", minimum=1), doc="Bytes per write (default 1)."),),
        "write the next message in many small writes",
    ),
    "coalesce": ((), "write the next message and the one after it in a single write"),
    "delayed-reply": (
        (
            _Key("command", _COMMAND, True, "The command whose next reply is late."),
            _Key("delay", _Duration(), True, "How late."),
        ),
        "answer a command late",
    ),
    "event-before-greeting": (
        (_Key("event", _Scalar("str"), doc="Event name (default RESUME)."),),
        "write an event to the next client that connects, before its greeting",
    ),
}
_TIMES_KEY = _Key("times", _TIMES, doc="`once`, a count, or `always` (default).")
_ARGS_KEY = _Key(
    "arguments",
    _Json(object_only=True),
    doc="Match commands whose arguments contain these members.",
)
# step head -> its other keys (cause and fault are per-kind, above)
_STEP_KEYS: dict[str, tuple[_Key, ...]] = {
    "emit": (
        _Key("data", _Json(object_only=True), doc="The event's data, checked against the profile."),
        _Key("fake", _BOOL, doc="Fill the data (or its missing members) with realistic values."),
    ),
    "wait": (),
    "until": (_ARGS_KEY, _Key("timeout", _Duration(), doc="Give up and go on after this long.")),
    "reply": (
        _Key("return", _Json(), doc="The canned result."),
        _Key(
            "error",
            _Obj(
                "error",
                (
                    _Key(
                        "class",
                        _Scalar(
                            "str",
                            enum=(
                                "GenericError",
                                "CommandNotFound",
                                "DeviceNotActive",
                                "DeviceNotFound",
                                "KVMMissingCap",
                            ),
                        ),
                        True,
                    ),
                    _Key("desc", _STR, True),
                ),
            ),
            doc="An error reply instead of a result.",
        ),
        _TIMES_KEY,
    ),
    "on": (_ARGS_KEY, _Key("steps", _Steps(), True, "What to run."), _TIMES_KEY),
    "repeat": (_Key("steps", _Steps(), True, "The block to repeat."),),
    "include": (),
}
_HEADS: dict[str, tuple[_Kind, str]] = {
    "cause": (_Scalar("str", enum=tuple(_CAUSES)), "make something happen the way QEMU would"),
    "emit": (_Scalar("str", pattern=r"^[A-Z][A-Z0-9_]*$"), "emit one event"),
    "wait": (_Duration(), "let time pass"),
    "until": (_COMMAND, "wait until a client sends a command"),
    "reply": (_COMMAND, "override a command's reply"),
    "on": (_COMMAND, "run steps when a client sends a command"),
    "repeat": (_Count("forever"), "repeat a block"),
    "include": (_Scalar("str"), "run another scenario file's timeline here"),
    "fault": (_Scalar("str", enum=tuple(_FAULTS)), "misbehave on the wire"),
}
_TOP = _Obj(
    "scenario",
    (
        _Key("name", _NAME, doc="Short name (default: the file name)."),
        _Key("description", _STR, doc="One line saying what real situation this mimics."),
        _Key("profile", _Scalar("str", enum=tuple(PROFILES)), doc="Protocol profile."),
        _Key("clock", _Scalar("str", enum=("first-client", "startup")), doc="When time starts."),
        _Key("vm", _VM, doc="The VM description."),
        _Key("steps", _Steps(), doc="The timeline."),
        _Key("actions", _StepsMap(), doc="Named blocks the control channel can trigger."),
    ),
)
