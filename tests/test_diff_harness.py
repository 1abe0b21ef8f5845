"""The differential harness itself: what it promises about the real QEMUs it starts."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
from qemu_harness import Referee, qemu_on_free_port, qemu_process, unix_session

pytestmark = pytest.mark.qemu

NEGOTIATE = b'{"execute": "qmp_capabilities"}'


def test_a_port_taken_before_qemu_binds_it_is_tried_again(real_qemu: Referee) -> None:
    offered: list[int] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def vnc(port: int) -> list[str]:
            offered.append(port)
            # the first attempt meets a port another process holds, as in a race
            chosen = taken if len(offered) == 1 else port
            return ["-M", "pc", "-S", "-vnc", f"127.0.0.1:{chosen - 5900}"]

        with qemu_on_free_port(vnc, referee=real_qemu) as (path, port):
            answer = unix_session(path, [NEGOTIATE, b'{"execute": "query-vnc"}'])
    assert len(offered) == 2
    assert port == offered[1]
    assert f'"service": "{port}"'.encode() in answer


def test_a_binary_of_another_version_is_refused(real_qemu: Referee) -> None:
    impostor = replace(real_qemu, version="9.9")
    with (
        pytest.raises(pytest.fail.Exception, match=r"is not QEMU 9\.9"),
        qemu_process(referee=impostor),
    ):
        pass
