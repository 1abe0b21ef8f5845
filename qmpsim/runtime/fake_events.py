"""An event's data made up from its schema: the ``fake: true`` of a scenario's ``emit`` step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qmpsim.qmp.profiles import Alternate, Array, Builtin, Enum, Object, Type

if TYPE_CHECKING:
    from qmpsim.fakedata import FakeData

__all__ = ["fake_data"]


_ADDRESS_KEYS = {"host", "service", "port", "family"}


def fake_data(type_: Object, fake: FakeData, given: Mapping[str, Any] | None = None) -> Any:
    """Data for an event of schema ``type_``: ``given`` members kept, the others made up.

    Required members are filled, and the address members of server/client objects;
    a union's tag is drawn (unless given) and its variant's members filled too.
    """
    out: dict[str, Any] = dict(given or {})
    family = str(out.get("family", "ipv4"))
    fields = list(type_.fields)
    if type_.tag is not None and type_.tag not in out:
        tag = type_.member(type_.tag)
        cases = list(type_.variants) or (
            list(tag.type.values) if tag is not None and isinstance(tag.type, Enum) else []
        )
        if cases:
            out[type_.tag] = fake.rng.choice(cases)
    branch = type_.variant(out)
    if branch is not None:
        fields += branch.fields
    for f in fields:
        if f.name in out:
            if isinstance(f.type, Object) and isinstance(out[f.name], Mapping):
                out[f.name] = fake_data(f.type, fake, out[f.name])
            continue
        if f.optional and f.name not in _ADDRESS_KEYS:
            continue
        out[f.name] = _fake_value(f.name, f.type, fake, family)
    return out


def _fake_value(name: str, type_: Type, fake: FakeData, family: str) -> Any:
    rng = fake.rng
    if isinstance(type_, Object):
        return fake_data(type_, fake)
    if isinstance(type_, Enum):
        if name == "family":
            return family if family in type_.values else type_.values[0]
        return rng.choice(type_.values)
    if isinstance(type_, Array):
        return [_fake_value(name, type_.of, fake, family)]
    if isinstance(type_, Alternate):
        # a scalar branch where there is one: it keeps recursive types finite
        scalars = [t for t in type_.members if isinstance(t, Builtin | Enum) and t.name != "null"]
        return _fake_value(name, scalars[0] if scalars else type_.members[0], fake, family)
    if type_.name == "bool":
        return rng.random() < 0.5
    if type_.name == "null":
        return None
    if type_.name == "any":
        return {}
    if name == "offset":
        return fake.rtc_offset()
    if name == "connection-id":
        return fake.connection_id("client")
    if type_.name in ("int", "number"):
        return rng.randint(0, 16)
    if name == "host":
        return fake.host(family)
    if name in ("service", "port"):
        return fake.ephemeral_port()
    if name == "device":
        return fake.drive_name()
    if name == "node-name":
        return fake.node_name()
    if name == "sasl_username":
        return fake.sasl_username()
    if name == "x509_dname":
        return fake.x509_dname()
    return f"{name}{rng.randint(0, 99)}"
