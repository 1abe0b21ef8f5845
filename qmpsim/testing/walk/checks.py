"""The walk's argument checks: each says what was expected in a ``ValueError`` (the
Hypothesis strategies turn it into ``InvalidArgument``)."""

from __future__ import annotations

from collections.abc import Collection

from qmpsim.errors import CatalogError
from qmpsim.qmp.profiles import ProfileSpec, get_profile
from qmpsim.vm import machine as m

__all__ = ["check_bounds", "check_names", "check_profile", "check_size", "check_vm"]


def check_profile(profile: object) -> ProfileSpec:
    """``profile`` as a :class:`ProfileSpec` (a name or a spec); ``ValueError`` otherwise."""
    if isinstance(profile, ProfileSpec):
        return profile
    if not isinstance(profile, str):
        raise ValueError(f"profile must be a profile name or a ProfileSpec, not {profile!r}")
    try:
        return get_profile(profile)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None


def check_size(name: str, value: object, minimum: int = 0) -> int:
    """``value`` as an integer ``>= minimum``; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_bounds(low_name: str, low: object, high_name: str, high: object) -> tuple[int, int]:
    """Two sizes, the second not below the first."""
    lo, hi = check_size(low_name, low), check_size(high_name, high)
    if hi < lo:
        raise ValueError(f"{high_name}={hi} is less than {low_name}={lo}")
    return lo, hi


def check_names(
    label: str,
    value: Collection[str] | None,
    known: Collection[str],
    default: Collection[str] | None = None,
) -> frozenset[str]:
    """The names chosen (``None``: ``default``, else all of ``known``); each must be known,
    at least one."""
    if value is None:
        return frozenset(known if default is None else default)
    if isinstance(value, str):
        raise ValueError(f"{label} must be a collection of names, not the string {value!r}")
    chosen = frozenset(value)
    unknown = sorted(n for n in chosen if n not in known)
    if unknown:
        raise ValueError(
            f"unknown {label}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    if not chosen:
        raise ValueError(f"{label} must name at least one")
    return chosen


def check_vm(vm: object) -> m.VmConfig | None:
    """``vm`` when it is a :class:`~qmpsim.vm.machine.VmConfig` or ``None``."""
    if vm is not None and not isinstance(vm, m.VmConfig):
        raise ValueError(f"vm must be a qmpsim.vm.machine.VmConfig, not {vm!r}")
    return vm
