"""psrec's local Ray listens on loopback only (psrec/raybind.py): every TCP socket that the
Ray processes of this test session (GCS, raylet, agents, workers, a PS actor's gRPC server)
listen on is bound to 127.0.0.1, none to 0.0.0.0 or [::]."""
from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:  # the parent pid is the 2nd field after the ")" that closes the command name
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    return out


def _listening() -> dict[int, str]:
    """Socket inode -> "address:port" of every TCP socket in LISTEN state on this machine."""
    out = {}
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            if f[3] != "0A":  # TCP_LISTEN
                continue
            host, port = f[1].split(":")
            raw = bytes.fromhex(host)
            # /proc prints each 32-bit word in host order (little-endian here)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(f[9])] = f"{ipaddress.ip_address(socket.inet_ntop(family, raw))}:{int(port, 16)}"
    return out


def _sockets_of(pids: set[int]) -> dict[int, set[int]]:
    """pid -> inodes of its sockets."""
    out: dict[int, set[int]] = {}
    for pid in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        out[pid] = {int(x[8:-1]) for x in links if x.startswith("socket:[")}
    return out


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_listener_of_the_local_ray_is_on_loopback(ray_session):
    from psrec.ev import EVConfig
    from psrec.ps.ray_transport import start_ps_actors

    actors = start_ps_actors(1, {"emb": EVConfig(dim=4)}, 1, False, [None], num_cpus=0.1)  # a worker + gRPC
    try:
        grpc_address = ray_session.get(actors[0].locate.remote(), timeout=60)["grpc"]
        listening = _listening()
        ours = {pid: {listening[i] for i in inodes if i in listening}
                for pid, inodes in _sockets_of(_descendants(os.getpid())).items()}
        ours = {pid: addrs for pid, addrs in ours.items() if addrs}
        found = sorted(a for addrs in ours.values() for a in addrs)
        # GCS, raylet, the driver's and the PS worker's core-worker servers, the agents: several processes
        assert len(ours) >= 4, ours
        assert grpc_address.split(":")[0].strip("[]") == "127.0.0.1" and any(
            a.endswith(":" + grpc_address.rsplit(":", 1)[1]) for a in found), (grpc_address, found)
        exposed = {pid: sorted(a for a in addrs if not _is_loopback(a)) for pid, addrs in ours.items()}
        exposed = {pid: addrs for pid, addrs in exposed.items() if addrs}
        assert not exposed, f"Ray processes listening beyond loopback: {exposed}"
    finally:
        for a in actors:
            ray_session.kill(a)
