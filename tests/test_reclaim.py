"""Nothing left behind by killed processes: temporary export directories of dead writers are
reclaimed by the next writer (with real SIGKILLs: tests/test_checkpoint.py's kill test); a
SIGKILLed PS leaves no shared-memory arena or socket, and the client's mappings of its arenas
go when the transport shuts down."""
import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from psrec.ev import EmbeddingVariable, EVConfig


def test_only_dead_writers_directories_are_reclaimed(tmp_path):
    """A live writer's temporary directory (this process's) stays; a dead one's goes."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    host = socket.gethostname().replace("-", "_")
    (tmp_path / f".t.tmp-{host}-{dead.pid}-abc").mkdir()
    (tmp_path / f".t.tmp-{host}-{os.getpid()}-def").mkdir()
    ev = EmbeddingVariable(EVConfig(dim=4), name="t")
    ev.apply_gradients(np.arange(10, dtype=np.int64), np.ones((10, 4), np.float32), step=1)
    ev.export(tmp_path / "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".t.tmp-{host}-{os.getpid()}-def", "t"]


def _mapped_arenas() -> int:
    return sum("memfd:psrec-" in line for line in Path("/proc/self/maps").read_text().splitlines())


def test_a_killed_ps_leaves_no_arena_or_socket(ray_session):
    import ray

    from psrec.commands.chaos import _pid
    from psrec.ev import OptimizerConfig
    from psrec.ps.ray_transport import RayTransport, start_ps_actors

    if not sys.platform.startswith("linux"):
        pytest.skip("memfds and abstract sockets are Linux features")
    before = set(glob.glob("/dev/shm/psrec-*"))
    tables = {"emb": EVConfig(dim=8, optimizer=OptimizerConfig(name="sgd", lr=0.1))}
    actor = start_ps_actors(1, tables, 1, False, [None], num_cpus=0.1)[0]
    tr = RayTransport([actor])
    assert tr.local == [True]
    tr.call_all("pull", [({"emb": np.arange(50000, dtype=np.int64)}, True, False, 0, False)])
    address = ray.get(actor.locate.remote(), timeout=30)["channel"]
    pid = _pid(actor)
    assert any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:psrec-") for fd in os.listdir(f"/proc/{pid}/fd")
               if os.path.islink(f"/proc/{pid}/fd/{fd}"))
    assert "@" + address[1:] in Path("/proc/net/unix").read_text()
    assert _mapped_arenas() >= 2  # the client maps the PS's request and reply arenas
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")
    assert "@" + address[1:] not in Path("/proc/net/unix").read_text()  # the socket went with its process
    assert set(glob.glob("/dev/shm/psrec-*")) == before  # arenas are memfds: no name to leave behind
    tr.shutdown()
    assert _mapped_arenas() == 0  # the client's mappings went with the transport
