"""Network namespaces, a bridge and veth pairs, through iproute2 (`ip`); and entering a
namespace from inside a running process (a driver joining the head's node).

Every command has a deadline and fails with one line naming the command and `ip`'s own error.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from psrec.cluster.config import TestbedError

__all__ = ["missing_caps", "require_root", "ip", "netns_exists", "link_exists", "add_netns", "add_bridge",
           "add_node_link", "delete_netns", "delete_link", "netns_pids", "enter_netns", "current_netns_inode"]

_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21  # linux/capability.h
_CLONE_NEWNET = 0x40000000
_TIMEOUT_S = 20.0


def missing_caps(status: str) -> list[str]:
    """The capabilities a testbed needs that the `CapEff` line of /proc/<pid>/status lacks."""
    eff = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    return [n for n, bit in (("CAP_NET_ADMIN", _CAP_NET_ADMIN), ("CAP_SYS_ADMIN", _CAP_SYS_ADMIN))
            if not eff >> bit & 1]


def require_root(what: str = "psrec cluster", status: str | None = None) -> None:
    """Refuse, in one line, without CAP_NET_ADMIN (links, tc) and CAP_SYS_ADMIN (namespaces)."""
    missing = missing_caps(Path("/proc/self/status").read_text() if status is None else status)
    if missing:
        raise TestbedError(f"{what} needs root: it makes network namespaces and shapes links with tc "
                           f"(missing {', '.join(missing)}); run it as root, e.g. with sudo")


def ip(*args: str, check: bool = True, netns: str = "") -> subprocess.CompletedProcess:
    """`ip [-n netns] args...` with a deadline; a failure raises TestbedError naming the command."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return _run(cmd, check)


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except FileNotFoundError as e:
        raise TestbedError(f"`{cmd[0]}` not found (install iproute2)") from e
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"`{' '.join(cmd)}` did not finish in {_TIMEOUT_S:.0f} s") from e
    if check and r.returncode != 0:
        raise TestbedError(f"`{' '.join(cmd)}` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:] or '?'}")
    return r


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(dev: str) -> bool:
    return Path("/sys/class/net", dev).exists()


def add_netns(name: str) -> None:
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def add_bridge(bridge: str) -> None:
    """A bridge with no address: the root namespace gets no route into the testbed, so its
    traffic stays between the nodes' own addresses."""
    ip("link", "add", bridge, "type", "bridge")
    ip("link", "set", bridge, "up")


def add_node_link(host_if: str, peer_if: str, netns: str, cidr: str, bridge: str) -> None:
    """A veth pair: `host_if` on the bridge, the other end in `netns` as eth0 with `cidr`.
    No default route inside: a node reaches the other nodes' addresses and nothing else."""
    ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
    ip("link", "set", peer_if, "netns", netns)
    ip("link", "set", peer_if, "name", "eth0", netns=netns)
    ip("addr", "add", cidr, "dev", "eth0", netns=netns)
    ip("link", "set", "eth0", "up", netns=netns)
    ip("link", "set", host_if, "master", bridge)
    ip("link", "set", host_if, "up")


def delete_link(dev: str) -> None:
    if link_exists(dev):
        ip("link", "del", dev, check=False)


def delete_netns(name: str) -> None:
    """Deleting a namespace also deletes the veth end inside it, and so its peer."""
    if netns_exists(name):
        ip("netns", "del", name, check=False)


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is `name`: the Ray nodes started there, their
    workers, and any driver that entered it."""
    if not netns_exists(name):
        return []
    r = ip("netns", "pids", name, check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit() and int(x) != os.getpid()]


def current_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def enter_netns(name: str) -> bool:
    """Move the calling thread into namespace `name` (setns(2)); threads it starts afterwards
    inherit it, threads already running stay where they are. Returns False if already there."""
    path = Path("/run/netns", name)
    if not path.exists():
        raise TestbedError(f"network namespace {name} does not exist (is the testbed up? `psrec cluster status`)")
    if os.stat(path).st_ino == current_netns_inode():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise TestbedError(f"cannot enter network namespace {name}: {os.strerror(err)} (needs root)")
    finally:
        os.close(fd)
    return True
