"""Realistic, seeded values that agree with each other (Faker-backed).

Only this module imports Faker; everything that needs fake values imports it
lazily.  One :class:`FakeData` per session: the same seed gives the same values,
and values drawn for one client stay the same across its channels.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from faker import Faker

FAMILIES = ("ipv4", "ipv6")
# QEMU's -drive names per interface (drive_new(): "%s%i%s%i" for buses, "%s%i" otherwise)
INTERFACES = ("ide", "scsi", "virtio", "floppy", "none")
SASL_REALMS = ("EXAMPLE.COM", "CORP.EXAMPLE.ORG", "LAB.EXAMPLE.NET")


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection as QEMU reports it: ``service``/``port`` is always a string."""

    host: str
    service: str
    family: str


class FakeData:
    """Seeded generator of QEMU-looking values."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.faker = Faker("en_US")
        self.faker.seed_instance(seed)
        self.rng = random.Random(seed)
        self._connection_ids: dict[str, int] = {}
        self._hosts: dict[tuple[str, str], str] = {}
        self._node_names: set[str] = set()

    def host(self, family: str = "ipv4") -> str:
        """A client address of ``family`` (``ipv4``: private range; ``ipv6``: a global one)."""
        if family == "ipv6":
            return str(self.faker.ipv6(network=False))
        if family == "ipv4":
            return str(self.faker.ipv4_private(network=False))
        raise ValueError(f"family {family!r} is not one of {', '.join(FAMILIES)}")

    def client_host(self, client: str, family: str = "ipv4") -> str:
        """The host of the client labelled ``client``: the same for all its connections."""
        key = (client, family)
        if key not in self._hosts:
            self._hosts[key] = self.host(family)
        return self._hosts[key]

    def ephemeral_port(self) -> str:
        """A client-side port in Linux's ephemeral range, as the string QEMU sends."""
        return str(self.rng.randint(32768, 60999))

    def endpoint(self, client: str, family: str = "ipv4") -> Endpoint:
        """A new connection of ``client``: its stable host and a fresh port."""
        return Endpoint(self.client_host(client, family), self.ephemeral_port(), family)

    def connection_id(self, client: str) -> int:
        """The SPICE connection id of ``client``'s session, stable across its channels.

        A random 32-bit value, signed as QEMU 7.2 reports it.
        """
        if client not in self._connection_ids:
            self._connection_ids[client] = self.rng.randint(-(2**31), 2**31 - 1)
        return self._connection_ids[client]

    def drive_name(self, interface: str = "virtio", index: int = 0) -> str:
        """The block device name QEMU gives ``-drive if=interface,index=index``."""
        if interface == "ide":
            return f"ide{index // 2}-hd{index % 2}"
        if interface == "scsi":
            return f"scsi{index // 7}-hd{index % 7}"
        if interface in ("virtio", "floppy"):
            return f"{interface}{index}"
        if interface == "none":
            return f"drive{index}"
        raise ValueError(f"interface {interface!r} is not one of {', '.join(INTERFACES)}")

    def node_name(self) -> str:
        """An automatically generated node name (``#block`` and a number), unique here."""
        while True:
            name = f"#block{self.rng.randint(100, 999)}"
            if name not in self._node_names:
                self._node_names.add(name)
                return name

    def image_path(self, fmt: str = "qcow2") -> str:
        """A disk image path as libvirt lays them out."""
        stem = re.sub(r"[^a-z0-9-]", "", self.faker.slug())
        return f"/var/lib/libvirt/images/{stem or 'disk'}.{fmt}"

    def vm_name(self) -> str:
        """A guest name (``-name``): lowercase host-like words."""
        return f"{self.faker.word()}-{self.faker.word()}-{self.rng.randint(1, 99):02d}"

    def uuid(self) -> str:
        """A VM UUID (``-uuid``), seeded."""
        return str(self.faker.uuid4())

    def sasl_username(self) -> str:
        """A SASL (Kerberos-style) username."""
        return f"{self.faker.user_name()}@{self.rng.choice(SASL_REALMS)}"

    def x509_dname(self) -> str:
        """A client certificate's distinguished name, as QEMU prints it."""
        country = self.faker.country_code()
        org = re.sub(r"[,=]", "", self.faker.company())
        city = re.sub(r"[,=]", "", self.faker.city())
        return f"C={country},O={org},L={city},CN={self.faker.hostname()}"

    def rtc_offset(self) -> int:
        """A plausible guest RTC offset: a time zone (whole quarter hours) or a small drift."""
        if self.rng.random() < 0.5:
            return self.rng.randint(-48, 56) * 900
        return self.rng.randint(-120, 120)
