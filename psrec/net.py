"""The network model shared by the PS transport, the collective path and the simulator.

One alpha-beta (Hockney) model: sending `nbytes` in `messages` messages over a link costs

    t = messages * latency + nbytes / bandwidth            (seconds)

(R. W. Hockney, "The communication challenge for MPP: Intel Paragon and Meiko CS-2",
Parallel Computing 20(3), 1994; the same alpha-beta model as R. Thakur, R. Rabenseifner,
W. Gropp, "Optimization of Collective Communication Operations in MPICH", IJHPCA 19(1), 2005).

A `NetConfig` holds one link for traffic across nodes and, optionally, a faster one for
traffic inside a node (shared memory, NVLink, PCIe); without the intra-node values both kinds
of traffic use the inter-node link.

The PS transport adds `transfer_time(net, nbytes, messages)` to each call and records it
separately from the real time, so that a laptop run behaves like the target cluster:

    >>> net = parse_net("bandwidth=10Gbit,latency=50us")
    >>> net.bandwidth            # bytes/s
    1250000000.0
    >>> round(transfer_time(net, 1_250_000, messages=2), 6)   # 2 * 50us + 1.25MB / 1.25GB/s
    0.0011

This module imports the standard library only, so that the EV core, the transports and the
simulator can all use it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["NetConfig", "NetConfigError", "parse_net", "parse_bandwidth", "parse_duration",
           "format_bandwidth", "format_duration", "transfer_time", "NO_NET"]


class NetConfigError(ValueError):
    """A network description with an unknown key, a missing or unknown unit, or a bad value."""


# Decimal multipliers, as network equipment and iperf quote them (10 Gbit = 10e9 bit/s).
_BANDWIDTH_UNITS: dict[str, float] = {
    "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}
_BANDWIDTH_UNIT_NAMES = "bit, Kbit, Mbit, Gbit, Tbit (bits/s) or B, KB, MB, GB, TB (bytes/s), optionally with /s"
# Divisors rather than factors: 50 / 1e6 is exactly the float 5e-05, 50 * 1e-6 is not.
_DURATION_UNITS: dict[str, float] = {"ns": 1e9, "us": 1e6, "µs": 1e6, "ms": 1e3, "s": 1.0}
_DURATION_UNIT_NAMES = "ns, us, ms, s"
_NUMBER_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf)\s*([^\s\d.].*?)?\s*$")


def parse_bandwidth(text: str, key: str = "bandwidth") -> float:
    """`"10Gbit"` -> 1.25e9 bytes/s. Bits (bit/Kbit/Mbit/Gbit) or bytes (B/KB/MB/GB) per second;
    the unit is required (a bare number could mean either); `inf` means no bandwidth limit.

    >>> parse_bandwidth("25Gbit/s"), parse_bandwidth("100MB"), parse_bandwidth("inf")
    (3125000000.0, 100000000.0, inf)
    """
    if text.strip().lower() == "inf":
        return math.inf
    m = _NUMBER_UNIT.match(text)
    if not m:
        raise NetConfigError(f"{key}: cannot read {text!r} as a bandwidth; expected e.g. 10Gbit "
                             f"(units: {_BANDWIDTH_UNIT_NAMES})")
    number, unit = m.group(1), (m.group(2) or "")
    base = unit[:-2] if unit.endswith("/s") else unit
    if base.endswith("bps"):  # 10Gbps = 10 Gbit/s
        base = base[:-3] + "bit"
    elif base.endswith("Bps"):  # 1GBps = 1 GB/s
        base = base[:-3] + "B"
    # "bit" in any case; a byte unit needs a capital B, so that "Gb" (gigabit, by convention)
    # is refused instead of being read as gigabytes.
    unit_key = base.lower() if base.lower().endswith("bit") or base.endswith("B") else ""
    if not unit:
        raise NetConfigError(f"{key}: {text!r} has no unit (units: {_BANDWIDTH_UNIT_NAMES})")
    if unit_key not in _BANDWIDTH_UNITS:
        raise NetConfigError(f"{key}: unknown bandwidth unit {unit!r} in {text!r} "
                             f"(units: {_BANDWIDTH_UNIT_NAMES})")
    value = float(number) * _BANDWIDTH_UNITS[unit_key]
    if not value > 0:
        raise NetConfigError(f"{key}: bandwidth must be > 0, got {text!r}")
    return value


def parse_duration(text: str, key: str = "latency") -> float:
    """`"50us"` -> 5e-05 seconds; units ns, us, ms, s (required).

    >>> parse_duration("50us"), parse_duration("1.5ms"), parse_duration("0s")
    (5e-05, 0.0015, 0.0)
    """
    m = _NUMBER_UNIT.match(text)
    if not m:
        raise NetConfigError(f"{key}: cannot read {text!r} as a duration; expected e.g. 50us "
                             f"(units: {_DURATION_UNIT_NAMES})")
    number, unit = m.group(1), (m.group(2) or "")
    if not unit:
        raise NetConfigError(f"{key}: {text!r} has no unit (units: {_DURATION_UNIT_NAMES})")
    if unit.lower() not in _DURATION_UNITS:
        raise NetConfigError(f"{key}: unknown time unit {unit!r} in {text!r} (units: {_DURATION_UNIT_NAMES})")
    value = float(number) / _DURATION_UNITS[unit.lower()]
    if not (value >= 0 and math.isfinite(value)):
        raise NetConfigError(f"{key}: latency must be finite and >= 0, got {text!r}")
    return value


def format_bandwidth(bytes_per_s: float) -> str:
    """1.25e9 -> '10Gbit' (the shortest exact-looking bit/s form)."""
    if math.isinf(bytes_per_s):
        return "inf"
    bits = bytes_per_s * 8
    for unit, mult in (("Tbit", 1e12), ("Gbit", 1e9), ("Mbit", 1e6), ("Kbit", 1e3)):
        if bits >= mult:
            return f"{bits / mult:g}{unit}"
    return f"{bits:g}bit"


def format_duration(seconds: float) -> str:
    """5e-05 -> '50us'."""
    if seconds == 0:
        return "0s"
    for unit, mult in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= mult:
            return f"{seconds / mult:g}{unit}"
    return f"{seconds / 1e-9:g}ns"


@dataclass(frozen=True)
class NetConfig:
    """An emulated network: one inter-node link and, optionally, a faster intra-node one.

    Args:
        bandwidth: bytes/s of the inter-node link (one NIC); `inf` = no bandwidth cost.
        latency: seconds per message on the inter-node link (the alpha of alpha-beta).
        intra_bandwidth: bytes/s between processes of one node; None = same as `bandwidth`.
        intra_latency: seconds per message inside a node; None = same as `latency`.

    Example:
        >>> NetConfig(bandwidth=1.25e9, latency=50e-6).link(intra=True)
        (1250000000.0, 5e-05)
        >>> parse_net("bandwidth=10Gbit,latency=50us,intra_bandwidth=100Gbit").link(intra=True)
        (12500000000.0, 5e-05)
    """

    bandwidth: float = math.inf  # default: no emulation (a laptop run costs its real time only)
    latency: float = 0.0
    intra_bandwidth: float | None = None
    intra_latency: float | None = None

    def __post_init__(self) -> None:
        for name in ("bandwidth", "intra_bandwidth"):
            v = getattr(self, name)
            if v is None and name == "intra_bandwidth":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise NetConfigError(f"{name} must be a number of bytes/s > 0, got {v!r}")
        for name in ("latency", "intra_latency"):
            v = getattr(self, name)
            if v is None and name == "intra_latency":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise NetConfigError(f"{name} must be a finite number of seconds >= 0, got {v!r}")

    def link(self, intra: bool = False) -> tuple[float, float]:
        """(bandwidth bytes/s, latency s) of the intra- or inter-node link."""
        if intra:
            bw = self.bandwidth if self.intra_bandwidth is None else self.intra_bandwidth
            lat = self.latency if self.intra_latency is None else self.intra_latency
            return float(bw), float(lat)
        return float(self.bandwidth), float(self.latency)

    @property
    def beta(self) -> float:
        """Seconds per byte on the inter-node link (1 / bandwidth)."""
        return 1.0 / self.bandwidth

    @property
    def emulated(self) -> bool:
        """False for the default, cost-free network."""
        return not (math.isinf(self.bandwidth) and self.latency == 0
                    and self.intra_bandwidth in (None, math.inf) and not self.intra_latency)

    def to_string(self) -> str:
        """The `--net` form; `parse_net(net.to_string()) == net` up to float rounding."""
        parts = [f"bandwidth={format_bandwidth(self.bandwidth)}", f"latency={format_duration(self.latency)}"]
        if self.intra_bandwidth is not None:
            parts.append(f"intra_bandwidth={format_bandwidth(self.intra_bandwidth)}")
        if self.intra_latency is not None:
            parts.append(f"intra_latency={format_duration(self.intra_latency)}")
        return ",".join(parts)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "net") -> NetConfig:
        """From a TOML table; values are numbers (bytes/s, seconds) or unit strings ("10Gbit", "50us")."""
        if isinstance(data, str):
            return parse_net(data, where=where)
        if not isinstance(data, Mapping):
            raise NetConfigError(f"{where}: expected a table or a string like 'bandwidth=10Gbit,latency=50us'")
        kwargs: dict[str, float | None] = {}
        for key, value in data.items():
            path = f"{where}.{key}" if where else key
            if key not in _FIELDS:
                raise NetConfigError(f"unknown network key {path!r}; known keys: {', '.join(_FIELDS)}")
            if isinstance(value, str):
                kwargs[key] = parse_bandwidth(value, path) if "bandwidth" in key else parse_duration(value, path)
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise NetConfigError(f"{path}: expected a number or a unit string, got {value!r}")
            else:
                kwargs[key] = float(value)
        try:
            return cls(**kwargs)
        except NetConfigError as e:
            raise NetConfigError(f"{where}: {e}") from None


_FIELDS = ("bandwidth", "latency", "intra_bandwidth", "intra_latency")

NO_NET = NetConfig()


def parse_net(text: str, where: str = "net") -> NetConfig:
    """`"bandwidth=10Gbit,latency=50us[,intra_bandwidth=..,intra_latency=..]"` -> NetConfig.

    Keys not given keep their defaults (no bandwidth limit, zero latency). Errors name the bad
    key or unit.

    >>> parse_net("latency=1ms")
    NetConfig(bandwidth=inf, latency=0.001, intra_bandwidth=None, intra_latency=None)
    """
    data: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise NetConfigError(f"{where}: {item!r} is not key=value (keys: {', '.join(_FIELDS)})")
        key, value = (s.strip() for s in item.split("=", 1))
        if key in data:
            raise NetConfigError(f"{where}: key {key!r} given twice")
        data[key] = value
    return NetConfig.from_mapping(data, where=where)


def transfer_time(net: NetConfig, nbytes: float, messages: float = 1, intra: bool = False) -> float:
    """Seconds to move `nbytes` bytes in `messages` messages over one link (alpha-beta model):

        t = messages * latency + nbytes / bandwidth

    Works elementwise on numpy arrays too. Hockney 1994; Thakur et al. 2005 (see module doc).

    >>> transfer_time(NetConfig(bandwidth=1e9, latency=1e-4), 5e8, messages=3)   # 3*0.1ms + 0.5s
    0.5003
    """
    bw, lat = net.link(intra)
    if _any_negative(nbytes) or _any_negative(messages):
        raise ValueError(f"nbytes and messages must be >= 0, got {nbytes!r}, {messages!r}")
    return messages * lat + nbytes / bw


def _any_negative(x: Any) -> bool:
    try:
        return bool((x < 0).any())  # numpy arrays
    except AttributeError:
        return x < 0
