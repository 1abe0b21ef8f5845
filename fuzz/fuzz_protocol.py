"""An atheris (libFuzzer) target: any bytes, any split, through the protocol and the machine.

The input's first byte chooses the write size, the rest is what a client sends.
Everything qmpsim writes back must be one well-formed QMP line per message, no
exception may escape, and after QEMU's reset byte (0xFF) a command must still
get its reply: the connection stays usable whatever came before.

    make fuzz                                    # 60 s, corpus in build/fuzz-corpus
    .venv/bin/python fuzz/fuzz_protocol.py -max_total_time=600 build/fuzz-corpus fuzz/seeds

Commands that end the session (quit, power-off) are taken out of the input so
the usability check always applies.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from qmpsim.qmp.profiles import DEFAULT_PROFILE, get_profile
    from qmpsim.qmp.protocol import Request, ServerConnection
    from qmpsim.vm.machine import CommandError, Machine

PROFILE = get_profile(DEFAULT_PROFILE)
SYNC = b'\xff{"execute": "query-status", "id": "fuzz-sync"}'
_ENDING = (b"quit", b"system_powerdown", b"system_reset", b"x-exit-preconfig")


def _session(data: bytes, split: int) -> list[bytes]:
    conn = ServerConnection(PROFILE)
    machine = Machine(profile=PROFILE)
    out = [conn.greeting()]
    for start in range(0, len(data), split):
        conn.receive_data(data[start : start + split])
        while (item := conn.next_request()) is not None:
            if isinstance(item, bytes):
                out.append(item)
                continue
            assert isinstance(item, Request)
            outcome = machine.execute(item.command, item.arguments)
            out.extend(conn.send_event(event.to_json()) for event in outcome.events)
            reply = outcome.reply
            if isinstance(reply, CommandError):
                out.append(conn.send_error(item, reply.error_class, reply.desc))
            else:
                out.append(conn.send_return(item, reply))
            if outcome.close or machine.exited:
                return out
    return out


def test_one_input(raw: bytes) -> None:
    if not raw:
        return
    split = raw[0] % 64 + 1
    body = raw[1:]
    for word in _ENDING:
        body = body.replace(word, b"query-kvm")
    out = _session(body + SYNC, split)
    for message in out:
        assert message.endswith(b"\r\n") and message.count(b"\r\n") == 1, message
        parsed: Any = json.loads(message)
        assert isinstance(parsed, dict), message
    last = json.loads(out[-1])
    if "event" not in last:
        assert last.get("id") == "fuzz-sync", out[-3:]


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
