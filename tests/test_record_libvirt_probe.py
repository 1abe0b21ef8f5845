"""tools/record_libvirt_probe.py reads libvirtd's monitor log the way libvirt 9.0 writes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "record_libvirt_probe.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("record_libvirt_probe", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Lines as libvirtd 9.0 logs them (a written buffer keeps its "\r\n"), abridged.
_T = "2026-12-02 04:00:28.235+0000: 12717: "
LOG = "\n".join(
    [
        _T + "info : qemuMonitorOpenInternal:647 : QEMU_MONITOR_NEW: mon=0x7f1 fd=25",
        _T + 'debug : qemuMonitorJSONIOProcessLine:189 : Line [{"QMP": {"version": {}, '
        '"capabilities": ["oob"]}}]',
        _T + "info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon=0x7f1 "
        'buf={"execute":"qmp_capabilities","id":"libvirt-1"}\r',
        _T + 'debug : qemuMonitorJSONIOProcessLine:189 : Line [{"return": {}, "id": "libvirt-1"}]',
        _T + "info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: mon=0x7f1 "
        'reply={"return": {}, "id": "libvirt-1"}',
        _T + "info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon=0x7f1 "
        'buf={"execute":"query-sev-capabilities","id":"libvirt-2"}\r',
        _T + "info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: mon=0x7f1 "
        'reply={"id": "libvirt-2", "error": {"class": "GenericError", "desc": "no"}}',
        # the second pass (accel=tcg) on another monitor is not part of the fixture
        _T + "info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon=0x7f2 "
        'buf={"execute":"qmp_capabilities","id":"libvirt-1"}\r',
        _T + "info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: mon=0x7f2 "
        'reply={"return": {}, "id": "libvirt-1"}',
        "",
    ]
)


def test_the_first_monitors_greeting_requests_and_replies_in_order() -> None:
    assert _tool().extract(LOG) == [
        {"greeting": {"QMP": {"version": {}, "capabilities": ["oob"]}}},
        {
            "request": {"execute": "qmp_capabilities", "id": "libvirt-1"},
            "reply": {"return": {}, "id": "libvirt-1"},
        },
        {
            "request": {"execute": "query-sev-capabilities", "id": "libvirt-2"},
            "reply": {"id": "libvirt-2", "error": {"class": "GenericError", "desc": "no"}},
        },
    ]


def test_a_log_without_the_replies_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    truncated = "\n".join(line for line in LOG.split("\n") if "RECV_REPLY" not in line)
    with pytest.raises(SystemExit) as exit_:
        _tool().extract(truncated)
    assert exit_.value.code == 1
    assert "2 requests but 0 replies on the first monitor" in capsys.readouterr().err
