"""Checkpoints that are complete or absent: a directory per global step, a manifest with a
sha256 per file, written aside and renamed into place in one atomic step.

    <root>/step-000000120/      a complete checkpoint (its MANIFEST.json is the last file in)
        MANIFEST.json           format "psrec-checkpoint", format_version, step, holds, files
        ...                     what the job wrote (EV exports per table and shard, dense
                                parameters, optimizer state, RNG state), every file listed
                                with its sha256 and size
    <root>/.tmp-step-...        one being written; never read, removed by the next writer

Writing: files go into a fresh temporary directory, each is fsynced, the manifest last, then
the directory is renamed to `step-N` and the root fsynced: a crash at any moment leaves the
previous checkpoints untouched and at most a temporary directory, which the next write
reclaims. Older checkpoints beyond `keep` (but for the bases a kept one needs) and any of a
later step (a trajectory the run rolled back from) are removed only after the new one is in
place, each renamed out of the listing before its files are deleted.

Reading (`verify`) refuses, each with one line naming the checkpoint and what is wrong: a
missing or unparsable manifest, a wrong format or a non-integer or newer `format_version`, a
listed path that leaves the checkpoint directory, a missing file, a size or sha256 mismatch.
What the arrays hold (finite values, non-negative counts and accumulators) is checked by their
own readers (`psrec.ev.load_snapshot`, `load_arrays`).

Increments (`psrec.core.incremental`): a checkpoint whose `holds.base` names an earlier one
in the same root (`{"name", "step", "manifest_sha256"}`) holds only what changed since it;
`chain` returns it with its bases back to a full one, each verified and each link checked
(the base is there, at that step, with that manifest), and pruning never removes a base a
kept checkpoint needs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from psrec.durable import fsync_path, fsync_tree

__all__ = ["CheckpointError", "write_checkpoint", "verify", "latest", "list_checkpoints", "chain", "base_link",
           "lineage", "save_arrays", "load_arrays", "FORMAT", "FORMAT_VERSION", "MANIFEST"]

FORMAT = "psrec-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
_STEP_DIR = re.compile(r"^step-(\d{9})$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted (incomplete, corrupted, or not one at all)."""


def _sha256_all(paths: list[Path]) -> list[str]:
    """sha256 of each file, on a thread per core (hashlib releases the GIL): the hashes are
    most of a large checkpoint's CPU time."""
    if len(paths) < 2:
        return [_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(_sha256, paths))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(root: str | os.PathLike, step: int, write: Callable[[Path], Mapping[str, Any]],
                     keep: int = 2) -> Path:
    """Write the checkpoint of global step `step` under `root`; returns its directory.

    `write(dir)` writes the job's files into `dir` and returns what it holds (JSON-able: e.g.
    tables and shards, dense parameters, data position) for the manifest. Keeps the newest
    `keep` checkpoints (at least 1).
    """
    if step < 0 or int(step) != step:
        raise ValueError(f"checkpoint step must be a non-negative integer, got {step!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # a writer that died: nobody else reads these
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{int(step):09d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{int(step):09d}-", dir=root))
    try:
        holds = dict(write(tmp))
        paths = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
        files = {p.relative_to(tmp).as_posix(): {"sha256": h, "bytes": p.stat().st_size}
                 for p, h in zip(paths, _sha256_all(paths))}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
                    "created": time.time(), "holds": holds, "files": files}
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        fsync_tree(tmp)
        if final.exists():  # the same step again (a resumed run): the new one replaces it
            aside = root / f".tmp-step-{int(step):09d}-old"
            os.replace(final, aside)
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Checkpoints of later steps belong to a trajectory this run rolled back from (it resumed
    # from an earlier one): they go, or they would count as the newest and prune this one.
    listed = [p for p in list_checkpoints(root) if int(_STEP_DIR.match(p.name).group(1)) <= step]
    needed = {p.name for p in listed[-max(1, keep):] for p in lineage(p)}
    for old in list_checkpoints(root)[len(listed):]:
        doomed = root / f".tmp-step-{old.name[5:]}-deleting"
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    for old in (p for p in listed if p.name not in needed):
        # Renamed out of the listing first: a kill in the middle of rmtree would otherwise leave
        # a step directory with its manifest and only some of its files.
        doomed = root / f".tmp-step-{old.name[5:]}-deleting"
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories under `root`, oldest first (by step)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under `root` that verifies, with its whole chain of
    bases (`chain`), or None. A newer one that fails is skipped (`chain` names why)."""
    for p in reversed(list_checkpoints(root)):
        try:
            chain(p)
        except CheckpointError:
            continue
        return p
    return None


def base_link(base: str | os.PathLike) -> dict[str, Any]:
    """What an increment's `holds.base` records of the checkpoint `base` it continues."""
    raw = (Path(base) / MANIFEST).read_bytes()  # the writer's own last checkpoint: `chain` verifies it on reading
    return {"name": Path(base).name, "step": int(json.loads(raw)["step"]),
            "manifest_sha256": hashlib.sha256(raw).hexdigest()}


def chain(path: str | os.PathLike) -> list[Path]:
    """The checkpoint at `path` and its bases, the full one first, each verified; refuses a
    broken chain (a base missing, replaced, or not earlier) in one line naming the link."""
    path = Path(path)
    out = [path]
    m = verify(path)
    while (link := m["holds"].get("base") if isinstance(m.get("holds"), dict) else None) is not None:
        if not isinstance(link, dict) or not _STEP_DIR.match(str(link.get("name", ""))):
            raise CheckpointError(f"checkpoint {out[-1]}: holds.base is not a checkpoint link ({link!r})")
        base = path.parent / link["name"]
        if not (base / MANIFEST).is_file():
            raise CheckpointError(f"checkpoint {out[-1]}: its base {link['name']} is missing (broken increment "
                                  "chain; resume from a full checkpoint)")
        if hashlib.sha256((base / MANIFEST).read_bytes()).hexdigest() != link.get("manifest_sha256"):
            raise CheckpointError(f"checkpoint {out[-1]}: its base {link['name']} was replaced since (its manifest "
                                  "differs: broken increment chain)")
        bm = verify(base)
        if bm["step"] >= m["step"] or bm["step"] != link.get("step"):
            raise CheckpointError(f"checkpoint {out[-1]}: its base {link['name']} is at step {bm['step']}, "
                                  f"the link says {link.get('step')} (an increment follows an earlier step)")
        out.append(base)
        m = bm
    return out[::-1]


def lineage(path: str | os.PathLike) -> list[Path]:
    """`path` and the bases its manifest names, newest first, unverified (what pruning keeps)."""
    path = Path(path)
    out = [path]
    while len(out) <= 10_000:
        try:
            link = json.loads((out[-1] / MANIFEST).read_text()).get("holds", {}).get("base")
        except (OSError, ValueError, AttributeError):
            break
        if not isinstance(link, dict) or not _STEP_DIR.match(str(link.get("name", ""))):
            break
        out.append(path.parent / link["name"])
    return out


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the checkpoint at `path`, after checking every file it lists (module doc)."""
    path = Path(path)
    mf = path / MANIFEST
    try:
        m = json.loads(mf.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: no {MANIFEST} (incomplete, or not a checkpoint)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} is not readable JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format is {m.get('format') if isinstance(m, dict) else m!r}, "
                              f"expected {FORMAT!r}")
    v = m.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise CheckpointError(f"checkpoint {path}: format_version must be a positive integer, got {v!r}")
    if v > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format_version {v} is newer than this reader's {FORMAT_VERSION}")
    step = m.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path}: step must be a non-negative integer, got {step!r}")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"checkpoint {path}: the manifest lists no files")
    base = path.resolve()
    for rel, entry in files.items():  # every entry checked before any file is hashed
        p = (path / rel).resolve()
        if os.path.isabs(rel) or ".." in Path(rel).parts or base not in p.parents:
            raise CheckpointError(f"checkpoint {path}: file {rel!r} is outside the checkpoint directory")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise CheckpointError(f"checkpoint {path}: file {rel!r} has no sha256")
        if not p.is_file():
            raise CheckpointError(f"checkpoint {path}: file {rel!r} is missing")
        if p.stat().st_size != entry.get("bytes"):
            raise CheckpointError(f"checkpoint {path}: file {rel!r} has {p.stat().st_size} bytes, "
                                  f"the manifest says {entry.get('bytes')}")
    for (rel, entry), h in zip(files.items(), _sha256_all([path / rel for rel in files])):
        if h != entry["sha256"]:
            raise CheckpointError(f"checkpoint {path}: file {rel!r} fails its sha256 (corrupted)")
    return m


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                meta: Mapping[str, Any] | None = None) -> None:
    """Named arrays as `<name>.npy` (no pickle) plus `arrays.json` (names, dtypes, shapes, `meta`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    index = {}
    for name, a in arrays.items():
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ValueError(f"array name {name!r}: letters, digits, '_', '.', '-' only")
        a = np.asarray(a)
        a = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
        np.save(path / f"{name}.npy", a, allow_pickle=False)
        index[name] = {"dtype": a.dtype.str, "shape": list(a.shape)}
    (path / "arrays.json").write_text(json.dumps({"arrays": index, "meta": dict(meta or {})}, sort_keys=True))


def load_arrays(path: str | os.PathLike, finite: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) written by `save_arrays`; refuses a dtype or shape other than the index's
    and, with `finite`, a non-finite float."""
    path = Path(path)
    try:
        index = json.loads((path / "arrays.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: arrays.json unreadable ({e})") from None
    out = {}
    for name, e in index.get("arrays", {}).items():
        a = np.load(path / f"{name}.npy", allow_pickle=False)
        if a.dtype.str != e["dtype"] or list(a.shape) != list(e["shape"]):
            raise CheckpointError(f"{path}: {name} is {a.dtype} {a.shape}, the index says {e['dtype']} {e['shape']}")
        if finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values")
        out[name] = a
    return out, index.get("meta", {})
