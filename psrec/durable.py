"""Writes that survive a crash: fsync of a file's bytes and of a directory's entries (a rename
is durable only once its directory is fsynced), and temporary directories named for their
writer so that those of dead writers are reclaimed. The one helper the EV exports and the
checkpoints share; the standard library only, so every layer may import it."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from pathlib import Path

__all__ = ["fsync_path", "fsync_tree", "writer_tmpdir"]


def fsync_path(path: str | os.PathLike) -> None:
    """fsync one file or directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under `path`, then every directory bottom-up."""
    for d, _dirs, files in os.walk(path, topdown=False):
        for f in files:
            fsync_path(os.path.join(d, f))
        fsync_path(d)


def writer_tmpdir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new temporary directory `<prefix><host>-<pid>-<random>` in `parent`, after removing
    those of writers on this host that died (SIGKILLed mid-write: nobody else reclaims them)."""
    parent = Path(parent)
    host = socket.gethostname().replace("-", "_")
    for stale in parent.glob(f"{glob.escape(prefix)}{glob.escape(host)}-*-*"):
        pid = stale.name[len(prefix) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{host}-{os.getpid()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
