"""Serve a recorded QMP session back: a :class:`~qmpsim.runtime.server.Responder` for the simulator.

The k-th client to connect is served the k-th recorded session: its greeting,
the recorded reply to each request that matches the recording (same command,
same arguments; the reply carries the client's own ``id``), and the recorded
events, before the reply they preceded or at their recorded offset (see
:mod:`qmpsim.qmp.cassette`).  Events keep their recorded timestamps, so a client
that sends what the recorded client sent receives the same bytes.

Strict (the default): requests are matched in the recorded order, and any other
request gets an error reply naming what the recording expected next (also kept
in :attr:`Replayer.failures`).  Lenient: a request matches the first recorded
one not yet replayed, wherever it is, and a request the recording does not hold
falls through to the simulated machine, which answers as the profile says.

Use::

    sim, replayer = replay_simulator(load_cassette("session.jsonl"))
    async with sim:
        await sim.listen_unix("/tmp/qmp.sock")
        ...
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from qmpsim.qmp.cassette import Cassette, Exchange, RecordedEvent, Session
from qmpsim.qmp.protocol import Request
from qmpsim.qmp.transcript import Direction, Entry
from qmpsim.qmp.wire import qdict_insertion
from qmpsim.runtime.server import Simulator
from qmpsim.vm.machine import CommandError, Event, Machine, Outcome

__all__ = ["Replayer", "replay_simulator"]

log = logging.getLogger("qmpsim.replay")


@dataclass
class _Playing:
    """One connected client and the session it is served."""

    session: Session | None
    played: list[bool]
    cursor: int = 0
    negotiated: bool = False


@dataclass(order=True)
class _Due:
    when: float
    seq: int
    client: int = field(compare=False)
    events: tuple[RecordedEvent, ...] = field(compare=False)


class Replayer:
    """Answers clients from a :class:`~qmpsim.qmp.cassette.Cassette` (see the module doc).

    ``speed`` scales the recorded delays of events (2: twice as fast).  Attach it
    to a simulator with :meth:`attach` (``replay_simulator`` does) before the
    simulator starts: the simulator then runs :meth:`run`, which writes the timed
    events.
    """

    def __init__(self, cassette: Cassette, *, strict: bool = True, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("Replayer: speed must be a positive number")
        self.cassette = cassette
        self.strict = strict
        self.speed = speed
        self.failures: list[str] = []
        """What strict mode objected to, one line each, in order."""
        self.on_failure: Callable[[str], None] | None = None
        """Called with each failure as it happens."""
        self._sim: Simulator | None = None
        self._clients: dict[int, _Playing] = {}
        self._next_session = 0
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self.finished = trio.Event()
        """Set once QEMU's side of the last recorded session has closed in the replay."""

    def attach(self, sim: Simulator) -> None:
        """Answer ``sim``'s clients from now on."""
        self._sim = sim
        sim.responder = self
        sim.transcript.subscribe(self._observe)

    # --- the Responder -----------------------------------------------------------

    def greeting(self, client: int) -> Mapping[str, Any] | None:
        """The recorded greeting of the next session (the profile's when none is left)."""
        sessions = self.cassette.sessions
        session = sessions[self._next_session] if self._next_session < len(sessions) else None
        self._next_session += 1
        played = [False] * (len(session.exchanges) if session is not None else 0)
        self._clients[client] = _Playing(session, played)
        if session is None or session.greeting is None:
            return None
        greeting: Mapping[str, Any] = qdict_insertion(session.greeting)
        return greeting

    def respond(self, client: int, request: Request) -> Outcome | None:
        """The recorded outcome of ``request``; see the module doc for matching."""
        playing = self._clients.get(client)
        if playing is None:
            return None
        self._flush(client)
        exchange = self._match(playing, request)
        if exchange is None:
            if not self.strict:
                return None
            problem = self._unexpected(playing, request)
            self.failures.append(problem)
            log.warning("client %d: %s", client, problem)
            if self.on_failure is not None:
                self.on_failure(problem)
            return Outcome(CommandError("GenericError", f"qmpsim replay: {problem}"))
        playing.played[exchange.index] = True
        while playing.cursor < len(playing.played) and playing.played[playing.cursor]:
            playing.cursor += 1
        if exchange.after:
            self._schedule(client, exchange.after)
        return self._outcome(playing, exchange)

    def _match(self, playing: _Playing, request: Request) -> Exchange | None:
        session = playing.session
        if session is None:
            return None
        if self.strict:
            if playing.cursor >= len(session.exchanges):
                return None
            candidates: Any = (session.exchanges[playing.cursor],)
        else:
            candidates = (e for e in session.exchanges if not playing.played[e.index])
        for exchange in candidates:
            if exchange.reply is not None and exchange.matches(request.command, request.arguments):
                found: Exchange = exchange
                return found
        return None

    def _unexpected(self, playing: _Playing, request: Request) -> str:
        sent = _describe(request)
        session = playing.session
        if session is None:
            count = len(self.cassette.sessions)
            return f"unexpected {sent}: the recording holds {count} session(s), all replayed"
        if playing.cursor >= len(session.exchanges):
            return f"unexpected {sent}: the recorded session has no more requests"
        expected = session.exchanges[playing.cursor]
        return (
            f"unexpected {sent}; expected next: {expected.describe()} "
            f"(request {expected.index + 1} of {len(session.exchanges)})"
        )

    def _outcome(self, playing: _Playing, exchange: Exchange) -> Outcome:
        reply = exchange.reply
        assert reply is not None
        events = tuple(_event(e) for e in exchange.events)
        close = exchange.closed
        if close and playing.session is self.cassette.sessions[-1] and self._sim is not None:
            # QEMU exited after this reply: so does the simulated VM.
            self._sim.machine.exited = True
            self.finished.set()
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], Mapping) else {}
            answer: Any = CommandError(str(error.get("class")), str(error.get("desc")))
        else:
            answer = qdict_insertion(reply["return"])
        return Outcome(answer, events, close)

    # --- timed events --------------------------------------------------------------

    def _observe(self, entry: Entry) -> None:
        # The first reply a client is written is its negotiation's: the opening
        # events count from there.
        if entry.direction is not Direction.OUT:
            return
        playing = self._clients.get(entry.client)
        if playing is None or playing.negotiated or playing.session is None:
            return
        if any(isinstance(m, dict) and "return" in m for m in entry.messages):
            playing.negotiated = True
            if playing.session.opening:
                self._schedule(entry.client, playing.session.opening)

    def _schedule(self, client: int, events: tuple[RecordedEvent, ...]) -> None:
        now = trio.current_time()
        for event in events:
            due = _Due(now + event.delay / self.speed, next(self._seq), client, (event,))
            heapq.heappush(self._due, due)
        self._wake.set()

    def _flush(self, client: int) -> None:
        """Write now every event still waiting for ``client``: they came first."""
        mine = sorted(d for d in self._due if d.client == client)
        if not mine:
            return
        self._due = [d for d in self._due if d.client != client]
        heapq.heapify(self._due)
        self._deliver(client, [e for d in mine for e in d.events])

    def _deliver(self, client: int, events: list[RecordedEvent]) -> None:
        sim = self._sim
        if sim is not None and client in sim.clients:
            sim.deliver([_event(e) for e in events])

    async def run(self) -> None:
        """Write timed events when they are due, until cancelled (the simulator runs it)."""
        while True:
            self._wake = trio.Event()
            if not self._due:
                await self._wake.wait()
                continue
            with trio.move_on_at(self._due[0].when):
                await self._wake.wait()
            now = trio.current_time()
            while self._due and self._due[0].when <= now:
                due = heapq.heappop(self._due)
                self._deliver(due.client, list(due.events))

    # --- what was not replayed -------------------------------------------------------

    def unplayed(self) -> list[str]:
        """The recorded requests no client sent, one line each."""
        lines: list[str] = []
        served = {id(p.session): p for p in self._clients.values() if p.session is not None}
        for number, session in enumerate(self.cassette.sessions, 1):
            playing = served.get(id(session))
            for exchange in session.exchanges:
                if playing is None or not playing.played[exchange.index]:
                    lines.append(
                        f"session {number}, request {exchange.index + 1}: {exchange.describe()}"
                    )
        return lines


def _describe(request: Request) -> str:
    import json

    shown: dict[str, Any] = {"exec-oob" if request.oob else "execute": request.command}
    if request.arguments:
        shown["arguments"] = request.arguments
    return json.dumps(shown, ensure_ascii=False)


def _event(recorded: RecordedEvent) -> Event:
    message = recorded.message
    stamp = message.get("timestamp")
    seconds = micro = 0
    if isinstance(stamp, Mapping):
        seconds = int(stamp.get("seconds", 0))
        micro = int(stamp.get("microseconds", 0))
    data = message.get("data")
    return Event(recorded.name, qdict_insertion(data) if data is not None else None, seconds, micro)


def replay_simulator(
    cassette: Cassette, *, strict: bool = True, speed: float = 1.0, **options: Any
) -> tuple[Simulator, Replayer]:
    """A simulator answering from ``cassette`` (its profile accepts every recorded command),
    and its :class:`Replayer`."""
    replayer = Replayer(cassette, strict=strict, speed=speed)
    sim = Simulator(Machine(profile=cassette.profile()), **options)
    replayer.attach(sim)
    return sim, replayer
