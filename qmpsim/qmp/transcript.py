"""An append-only record of every byte in and out of a simulator, with assertions over it.

Each :class:`Entry` keeps the bytes exactly as they crossed the wire (one read
for incoming data, one message for outgoing data) and the JSON values those
bytes completed, parsed the way QEMU parses them.  Transcripts export to and
import from JSON lines, one entry per line.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from qmpsim.qmp.wire import JsonStreamer, ParseError


class Direction(StrEnum):
    """Which way the bytes went, seen from the simulator."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)  # slots: a transcript keeps one per message
class Entry:
    """Bytes that crossed the wire, and the JSON values they completed."""

    direction: Direction
    client: int
    time: float
    raw: bytes
    messages: tuple[Any, ...] = ()
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON-lines form: raw bytes as text when they are UTF-8, else base64."""
        out: dict[str, Any] = {"dir": str(self.direction), "client": self.client, "time": self.time}
        try:
            out["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            out["raw_b64"] = base64.b64encode(self.raw).decode("ascii")
        out["json"] = list(self.messages)
        if self.errors:
            out["errors"] = list(self.errors)
        return out

    def lines(self) -> list[str]:
        """One line per message: ``client 1 -> {...}`` (``->``: from the client)."""
        arrow = "->" if self.direction is Direction.IN else "<-"
        out = [f"client {self.client} {arrow} {_dump(m)}" for m in self.messages]
        out += [f"client {self.client} {arrow} (bad input: {e})" for e in self.errors]
        if not self.raw:
            who = "the client" if self.direction is Direction.IN else "the server"
            out.append(f"client {self.client} {arrow} (closed by {who})")
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """The entry an exported line describes (``ValueError`` when it is malformed)."""
        if not isinstance(obj, dict):
            raise ValueError("a transcript line must be a JSON object")
        try:
            direction = Direction(obj["dir"])
            client = obj["client"]
            time = obj["time"]
            if "raw_b64" in obj:
                raw = base64.b64decode(obj["raw_b64"], validate=True)
            else:
                raw = str(obj["raw"]).encode("utf-8")
            messages = tuple(obj.get("json", ()))
            errors = tuple(str(e) for e in obj.get("errors", ()))
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise ValueError(f"malformed transcript entry: {exc}") from None
        if not isinstance(client, int) or not isinstance(time, int | float):
            raise ValueError("malformed transcript entry: 'client' and 'time' must be numbers")
        return cls(direction, client, float(time), raw, messages, errors)


@dataclass(frozen=True)
class SentCommand:
    """A command a client sent, as the transcript saw it."""

    client: int
    time: float
    command: str
    arguments: Mapping[str, Any]
    id: Any | None
    oob: bool
    message: Mapping[str, Any]


def arguments_match(actual: Any, expected: Any) -> bool:
    """Whether the ``actual`` arguments of a command match the ``expected`` ones.

    The one rule for ``until:``, ``on:``, transcript assertions and strict mode:
    an object matches when every member ``expected`` names is in ``actual`` and
    matches, recursively (members it does not name are not checked); an array
    matches an array of the same length whose items match one by one; any other
    value must be equal, and ``true``/``false`` never equal a number.
    """
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            key in actual and arguments_match(actual[key], want) for key, want in expected.items()
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(arguments_match(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)


@dataclass
class Transcript:
    """Append-only record of a simulator's traffic; observers see each entry as it lands.

    ``max_entries`` bounds memory for long-running servers: the transcript then keeps
    at least the newest ``max_entries`` entries and counts what it let go in
    ``dropped``.  ``None`` (the default, right for tests) keeps everything.
    """

    entries: list[Entry] = field(default_factory=list)
    max_entries: int | None = None
    dropped: int = 0
    _streamers: dict[tuple[int, Direction], JsonStreamer] = field(default_factory=dict, repr=False)
    _observers: list[Callable[[Entry], None]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.max_entries is not None and self.max_entries < 1:
            raise ValueError("Transcript: max_entries must be at least 1 (or None)")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def record(self, direction: Direction, client: int, time: float, raw: bytes) -> Entry:
        """Append ``raw`` as it crossed the wire; returns the entry with what it parsed to."""
        key = (client, direction)
        streamer = self._streamers.get(key)
        if streamer is None:
            streamer = self._streamers[key] = JsonStreamer()
        messages: list[Any] = []
        errors: list[str] = []
        for item in streamer.feed(raw) if raw else ():
            if isinstance(item, ParseError):
                errors.append(item.message)
            else:
                messages.append(item)
        entry = Entry(direction, client, time, raw, tuple(messages), tuple(errors))
        self.append(entry)
        return entry

    def append(self, entry: Entry) -> None:
        """Append a ready-made entry (used by :meth:`record` and when importing)."""
        self.entries.append(entry)
        limit = self.max_entries
        # Trimming in batches of a tenth keeps appends amortised O(1).
        if limit is not None and len(self.entries) > limit + limit // 10:
            excess = len(self.entries) - limit
            del self.entries[:excess]
            self.dropped += excess
        if self._observers:
            for observer in list(self._observers):
                observer(entry)

    def end_client(self, client: int) -> None:
        """Forget the parsing state of a client that went away."""
        for direction in Direction:
            self._streamers.pop((client, direction), None)

    def subscribe(self, observer: Callable[[Entry], None]) -> Callable[[], None]:
        """Call ``observer`` on every new entry; returns a function that unsubscribes."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def lines(self) -> list[str]:
        """Every message as a line, with its time since the first entry: ``+0.004s client 1
        <- {...}``; what a failing test's report shows."""
        start = self.entries[0].time if self.entries else 0.0
        return [f"+{e.time - start:.3f}s {line}" for e in self.entries for line in e.lines()]

    def clear(self) -> None:
        """Drop every entry (between tests sharing one simulator)."""
        self.entries.clear()
        self.dropped = 0

    # --- queries -----------------------------------------------------------------

    def messages(self, direction: Direction | None = None) -> list[Any]:
        """Every parsed message, in order, optionally of one direction."""
        return [
            m
            for e in self.entries
            if direction is None or e.direction is direction
            for m in e.messages
        ]

    def commands_sent(self, name: str | None = None) -> list[SentCommand]:
        """The commands clients sent (``execute`` and ``exec-oob``), optionally by name."""
        out: list[SentCommand] = []
        for entry in self.entries:
            if entry.direction is not Direction.IN:
                continue
            for msg in entry.messages:
                if not isinstance(msg, dict):
                    continue
                oob = "exec-oob" in msg
                command = msg.get("exec-oob" if oob else "execute")
                if not isinstance(command, str) or (name is not None and command != name):
                    continue
                args = msg.get("arguments", {})
                out.append(
                    SentCommand(
                        entry.client,
                        entry.time,
                        command,
                        args if isinstance(args, dict) else {},
                        msg.get("id"),
                        oob,
                        msg,
                    )
                )
        return out

    def events_sent(self, name: str | None = None) -> list[dict[str, Any]]:
        """The event messages written to clients, optionally by name."""
        return [
            m
            for m in self.messages(Direction.OUT)
            if isinstance(m, dict) and "event" in m and (name is None or m["event"] == name)
        ]

    def replies_sent(self) -> list[dict[str, Any]]:
        """The ``return`` and ``error`` messages written to clients."""
        return [
            m
            for m in self.messages(Direction.OUT)
            if isinstance(m, dict) and ("return" in m or "error" in m)
        ]

    def assert_command_sent(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> list[SentCommand]:
        """Fail with a readable message unless ``name`` was sent (with these arguments).

        ``arguments`` matches a subset of the arguments sent; ``count`` demands an
        exact number of matching commands (default: at least one).
        """
        matching = [
            c
            for c in self.commands_sent(name)
            if arguments is None or arguments_match(c.arguments, arguments)
        ]
        ok = len(matching) == count if count is not None else bool(matching)
        if not ok:
            what = name if arguments is None else f"{name} with arguments ⊇ {_dump(arguments)}"
            wanted = f"exactly {count}" if count is not None else "at least 1"
            sent = self.commands_sent()
            lines = [f"expected {wanted} {what}, found {len(matching)}"]
            if sent:
                lines.append("commands sent:")
                lines += [f"  client {c.client}: {_dump(c.message)}" for c in sent]
            else:
                lines.append("no command was sent")
            raise AssertionError("\n".join(lines))
        return matching

    def assert_command_sequence(
        self, *commands: str | tuple[str, Mapping[str, Any]]
    ) -> list[SentCommand]:
        """Fail with a readable message unless ``commands`` were sent in this order.

        Each is a name or ``(name, arguments)`` (a subset of the arguments sent);
        other commands may come between them.  Returns the matching commands.
        """
        __tracebackhide__ = True  # pytest shows the caller's line, not this one
        wanted = [(c, None) if isinstance(c, str) else (c[0], c[1]) for c in commands]
        sent = self.commands_sent()
        problem = sequence_mismatch(sent, wanted)
        if problem is not None:
            raise AssertionError(problem)
        return _matched_sequence(sent, wanted)

    def assert_event_sent(self, name: str, count: int | None = None) -> list[dict[str, Any]]:
        """Fail with a readable message unless event ``name`` was written (``count`` times)."""
        matching = self.events_sent(name)
        ok = len(matching) == count if count is not None else bool(matching)
        if not ok:
            wanted = f"exactly {count}" if count is not None else "at least 1"
            names = [str(m["event"]) for m in self.events_sent()]
            sent = ", ".join(names) if names else "none"
            raise AssertionError(
                f"expected {wanted} {name} event(s), found {len(matching)}; events sent: {sent}"
            )
        return matching

    # --- JSON lines ----------------------------------------------------------------

    def dump(self, out: IO[str]) -> None:
        """Write every entry as one JSON line."""
        for entry in self.entries:
            out.write(json.dumps(entry.to_json(), ensure_ascii=False) + "\n")

    def save(self, path: str | Path) -> None:
        """Write the transcript to ``path`` as JSON lines."""
        with open(path, "w", encoding="utf-8") as out:
            self.dump(out)

    @classmethod
    def load(cls, lines: Iterable[str], *, source: str = "<transcript>") -> Transcript:
        """A transcript from JSON lines; ``ValueError`` names the source and line when bad."""
        transcript = cls()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                transcript.append(Entry.from_json(json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{source}:{number}: {exc}") from None
        return transcript

    @classmethod
    def read(cls, path: str | Path) -> Transcript:
        """A transcript from a JSON-lines file."""
        with open(path, encoding="utf-8") as lines:
            return cls.load(lines, source=str(path))


def _matched_sequence(
    sent: Sequence[SentCommand], wanted: Sequence[tuple[str, Mapping[str, Any] | None]]
) -> list[SentCommand]:
    out: list[SentCommand] = []
    for command in sent:
        if len(out) < len(wanted):
            name, arguments = wanted[len(out)]
            if command.command == name and (
                arguments is None or arguments_match(command.arguments, arguments)
            ):
                out.append(command)
    return out


def sequence_mismatch(
    sent: Sequence[SentCommand], wanted: Sequence[tuple[str, Mapping[str, Any] | None]]
) -> str | None:
    """``None`` when ``wanted`` was sent in this order (others may come between), else why not."""
    found = _matched_sequence(sent, wanted)
    if len(found) == len(wanted):
        return None
    name, arguments = wanted[len(found)]
    what = name if not arguments else f"{name} with arguments ⊇ {_dump(arguments)}"
    after = f"after {', '.join(c.command for c in found)}" if found else "first"
    order = ", ".join(c.command for c in sent) if sent else "nothing"
    return (
        f"expected the commands {', '.join(w[0] for w in wanted)} in this order: "
        f"no {what} {after}; sent, in order: {order}"
    )


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=False)
