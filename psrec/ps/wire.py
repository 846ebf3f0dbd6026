"""What a PS accepts: the checks every transport's requests pass before a shard sees them,
and the errors that refuse them.

A refused request changes no stored state and gets one clear error; the PS keeps serving.
The errors carry the gRPC status code each wire reports them with (the same-node channel
sends the same codes), so a caller sees the same refusal whichever transport it used.
Plain numpy: no gRPC or Ray here.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from psrec.ps.config import WireLimits

__all__ = ["WireError", "BadRequest", "TooLarge", "Unauthenticated", "check_pull", "check_push",
           "error_for_code", "WireOptions", "MAX_STEP", "check_path"]

MAX_STEP = 1 << 53  # steps are counters; beyond 2**53 a float64 step loses integers


class WireError(Exception):
    """A refused request. `code` is its gRPC status name."""

    code = "INTERNAL"


class BadRequest(WireError, ValueError):
    """Wrong dtype, shape, length, table name or step, or a non-finite value."""

    code = "INVALID_ARGUMENT"


class TooLarge(BadRequest):
    """Over a configured limit (`WireLimits`)."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(WireError, PermissionError):
    """No token, or not this job's."""

    code = "UNAUTHENTICATED"


_BY_CODE = {c.code: c for c in (BadRequest, TooLarge, Unauthenticated)}


def error_for_code(code: str, message: str) -> Exception:
    """The exception a client raises for a refusal the PS sent with `code`."""
    return _BY_CODE.get(code, RuntimeError)(message)


def _table_dim(shard, table) -> int:
    if not isinstance(table, str) or table not in shard.store.table_names:
        raise BadRequest(f"shard {shard.index}: unknown table {table!r}; tables: {', '.join(shard.store.table_names)}")
    return shard.store.dim(table)


def _vector(a, kind: str, what: str, n: int | None, limits: WireLimits) -> None:
    if not isinstance(a, np.ndarray) or a.dtype.kind not in kind or a.ndim != 1:
        raise BadRequest(f"{what}: expected a 1-d array of kind {kind!r}, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if len(a) > limits.max_keys:
        raise TooLarge(f"{what}: {len(a)} entries, over the limit of {limits.max_keys}")
    if n is not None and len(a) != n:
        raise BadRequest(f"{what}: {len(a)} entries for {n} keys")


def _step(shard, step, what: str, sync_window: bool) -> None:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < MAX_STEP:
        raise BadRequest(f"shard {shard.index}: {what} {step!r} is not a step in [0, 2**53)")
    # Sync: a worker pushes step s only after its pull saw s - 1 applied, so every push is for
    # applied + 1 and every pull waits for at most that; anything else would sit pending (or
    # hold a server thread) until the timeout.
    ahead = 1 + getattr(shard, "staleness", 0)  # bounded staleness (ps.staleness) widens the window
    if sync_window and shard.sync and not (step <= shard.applied_step + ahead):
        raise BadRequest(f"shard {shard.index}: {what} {step} is ahead of applied step {shard.applied_step} + {ahead}")


def check_pull(shard, keys, train, dense, min_step, next_step, limits: WireLimits) -> None:
    """Refuse a pull (`PSShard.pull` plus the sync step) that the shard should not serve."""
    if not isinstance(keys, dict):
        raise BadRequest(f"pull keys: expected table -> keys, got {type(keys).__name__}")
    if len(keys) > limits.max_tables:
        raise TooLarge(f"pull names {len(keys)} tables, over the limit of {limits.max_tables}")
    for t, k in keys.items():
        _table_dim(shard, t)
        _vector(k, "iu", f"pull keys of {t!r}", None, limits)
    for name, flag in (("train", train), ("dense", dense), ("next_step", next_step)):
        if not isinstance(flag, (bool, np.bool_)):
            raise BadRequest(f"pull {name}: expected a bool, got {flag!r}")
    _step(shard, min_step, "pull min_step", sync_window=True)


def check_push(shard, grads, dense_grad, step, limits: WireLimits) -> None:
    """Refuse a push (`PSShard.push`) with bad shapes, dtypes, tables, steps or values."""
    if not isinstance(grads, dict):
        raise BadRequest(f"push grads: expected table -> (keys, grads, counts), got {type(grads).__name__}")
    if len(grads) > limits.max_tables:
        raise TooLarge(f"push names {len(grads)} tables, over the limit of {limits.max_tables}")
    _step(shard, step, "push step", sync_window=True)
    if shard.sync and step <= shard.applied_step:
        raise BadRequest(f"shard {shard.index}: push for step {step}, already applied")
    for t, triple in grads.items():
        dim = _table_dim(shard, t)
        if not isinstance(triple, (tuple, list)) or len(triple) != 3:
            raise BadRequest(f"push of {t!r}: expected (keys, grads, counts)")
        k, g, c = triple
        _vector(k, "iu", f"push keys of {t!r}", None, limits)
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f" or g.shape != (len(k), dim):
            raise BadRequest(f"shard {shard.index}, table {t!r}: gradient shape {getattr(g, 'shape', None)} "
                             f"does not match {len(k)} keys of width {dim}")
        _vector(c, "iu", f"push counts of {t!r}", len(k), limits)
        if len(c) and c.min() < 0:
            raise BadRequest(f"push counts of {t!r}: negative count {c.min()}")
        if not np.all(np.isfinite(g)):
            raise BadRequest(f"shard {shard.index}, table {t!r}: non-finite gradient at step {step}")
    if dense_grad is not None:
        want = shard.dense_size
        if want is None or not isinstance(dense_grad, np.ndarray) or dense_grad.dtype.kind != "f" \
                or dense_grad.shape != (want,):
            raise BadRequest(f"shard {shard.index}: dense gradient shape {getattr(dense_grad, 'shape', None)}, "
                             f"expected {None if want is None else (want,)}")
        if not np.all(np.isfinite(dense_grad)):
            raise BadRequest(f"shard {shard.index}: non-finite dense gradient at step {step}")


@dataclass(frozen=True)
class WireOptions:
    """How a job's PS processes serve their wires (sent to each PS actor through Ray).

    Args:
        token: the job's secret: every gRPC call and channel connection must carry it.
        grpc: start a gRPC server in each PS (ps.transport "auto" or "grpc").
        tls_cert, tls_key: PEM file paths on the PS's node ("" = plaintext gRPC).
        limits: what one request may hold.
        run_dir: the job's run directory: Export/Restore over gRPC name paths under it only
            (`check_path`; "" = none). Ray actor calls are not limited: Ray is the trust boundary.
        resume_dir: a directory Restore may also read under (the checkpoints a run resumes from).
    """

    token: str
    grpc: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    limits: WireLimits = field(default_factory=WireLimits)
    run_dir: str = ""
    resume_dir: str = ""

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ValueError("a job token needs at least 16 characters")

    def __repr__(self) -> str:  # never print the token
        return f"WireOptions(grpc={self.grpc}, tls={bool(self.tls_cert)}, limits={self.limits})"

    @classmethod
    def new(cls, grpc: bool = True, **kw) -> WireOptions:
        """Options with a fresh random token (256 bits)."""
        return cls(secrets.token_hex(32), grpc, **kw)

    @classmethod
    def for_job(cls, p, run_dir: str = "", resume_dir: str = "") -> WireOptions:
        """A job's options from its `PSConfig`: a fresh token, gRPC unless ps.transport = "ray"."""
        return cls.new(p.transport in ("auto", "grpc"), tls_cert=p.tls_cert, tls_key=p.tls_key, limits=p.limits,
                       run_dir=run_dir, resume_dir=resume_dir)

    def roots(self, method: str) -> tuple[str, ...]:
        """The directories `method` ("export" or "restore") may name paths under, over a wire."""
        dirs = (self.run_dir,) + ((self.resume_dir,) if method == "restore" else ())
        return tuple(d for d in dirs if d)


_MAX_PATH = 4096  # bytes: Linux's PATH_MAX
_MAX_ENTRIES = 100_000  # files and directories looked at under a path: a shard export holds tens


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def check_path(path, roots: tuple[str, ...], what: str) -> str:
    """`path` (absolute) as the real path it names, if that lies under one of `roots`; a
    BadRequest naming `what` otherwise: a relative path, a '..' component, a symlink that
    leads out (the path's own components or anything below it), or no roots at all. Guards
    against a caller naming any file the PS process could write or read; not against one who
    can already write inside the run directory."""
    if not roots:
        raise BadRequest(f"{what}: this PS takes no paths over the wire (it was started without a run directory)")
    if not isinstance(path, str) or not path or "\0" in path or len(path.encode(errors="replace")) > _MAX_PATH:
        raise BadRequest(f"{what}: not a path: {str(path)[:80]!r}")
    p = Path(path)
    if not p.is_absolute() or ".." in p.parts:
        raise BadRequest(f"{what}: {path[:200]!r} must be absolute and free of '..'")
    real = Path(os.path.realpath(p))  # every symlink on the way resolved
    allowed = [Path(os.path.realpath(r)) for r in roots]
    if not _under(real, allowed):
        raise BadRequest(f"{what}: {path[:200]!r} is outside the job's run directory")
    if real.is_dir():
        seen = 0
        for top, dirs, files in os.walk(real):  # does not descend into linked directories; they are checked here
            for name in dirs + files:
                seen += 1
                entry = Path(top) / name
                if seen > _MAX_ENTRIES:
                    raise BadRequest(f"{what}: over {_MAX_ENTRIES} entries under {path[:200]!r}")
                if entry.is_symlink() and not _under(Path(os.path.realpath(entry)), allowed):
                    raise BadRequest(f"{what}: {str(entry)[:200]!r} links outside the job's run directory")
    return str(real)
