"""Snapshots of an embedding variable and their on-disk format (format version 1; increments 2).

An export is a directory that numpy alone can read (`np.load(..., allow_pickle=False)` and
`json`); `docs/ev-format.md` is the full description. Layout, with R rows of width D:

    manifest.json        format "psrec-ev", format_version 1, name, dim, step, optimizer,
                         counts, the table's config, and one entry per array file below
                         (file, dtype, shape)
    keys.npy             (R,)   int64   feature keys, ascending
    values.npy           (R, D) float32 embeddings, row i belongs to keys[i]
    freqs.npy            (R,)   int64   occurrences in updates (with multiplicity)
    versions.npy         (R,)   int64   global step of the latest update, -1 = never updated
    slot.<name>.npy      (R, D) or (R,) optimizer state, e.g. slot.accum.npy for adagrad
    filter.keys.npy      (W,)   int64   counter filter: keys still waiting for admission
    filter.counts.npy    (W,)   int64   ... and their occurrences so far
    filter.sketch.npy    (m,)   uint8/16/32  bloom filter: the counting Bloom filter's counters
    live_keys.npy        (L,)   int64   increments only: every key the table holds (written
                                        when rows may have been evicted since the base)

An incremental export (DeepRec's incremental checkpoint; `psrec.ev.increment`) has the same
files holding only the rows updated after its base's step, and a manifest entry
`increment: {since_step, live_keys}`; it is not a table on its own, so `load_snapshot`
refuses it and `load_increment` reads it.

A snapshot is taken under the variable's lock, so values, slots and metadata are of one
moment (restoring mismatched slots and values is how a known DeepRec bug trained into NaN).
Files are written into a temporary sibling directory, the manifest last, fsynced, then renamed
into place; an export being replaced is moved aside first and deleted only once the new one
is in place (readers fall back to it meanwhile): a directory without a manifest is an
incomplete export and is refused. Non-finite values or slots, negative freqs and negative
accumulators are refused on writing and on reading.

Version policy: readers refuse a `format_version` newer than theirs; a reader for version N
reads every version <= N.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psrec.durable import fsync_path, writer_tmpdir

__all__ = ["EVSnapshot", "save_snapshot", "load_snapshot", "load_increment", "export_step", "FORMAT_NAME",
           "FORMAT_VERSION"]

FORMAT_NAME = "psrec-ev"
FORMAT_VERSION = 2  # this reader's; full exports are still written as version 1
_INCREMENT_VERSION = 2  # increments: a version-1 reader would take one for a whole table, so it must refuse it

_CORE = {"keys": ("int64", 1), "values": ("float32", 2), "freqs": ("int64", 1), "versions": ("int64", 1)}
# optimizer slots that sum squares or count (adagrad accum, ftrl n, adam v and its step count)
_NON_NEGATIVE_SLOTS = frozenset({"accum", "n", "v", "step"})


@dataclass
class EVSnapshot:
    """One embedding variable's state at one moment, rows sorted by key.

    Args:
        name: table name.
        dim: row width D.
        step: the largest global step applied before the snapshot (-1: none).
        optimizer: optimizer name; `slots` holds its state.
        keys: (R,) int64, ascending.
        values: (R, D) float32.
        freqs: (R,) int64.
        versions: (R,) int64, -1 = never updated.
        slots: slot name -> (R, D) or (R,) array.
        filter_kind: admission filter kind ("none", "counter", "bloom").
        filter_arrays: the filter's arrays ("keys"/"counts" or "sketch").
        filter_meta: the filter's JSON-able metadata.
        config: the table's EVConfig as a plain mapping (informational).
        evicted_total: rows evicted over the variable's life.
    """

    name: str
    dim: int
    step: int
    optimizer: str
    keys: np.ndarray
    values: np.ndarray
    freqs: np.ndarray
    versions: np.ndarray
    slots: dict[str, np.ndarray] = field(default_factory=dict)
    filter_kind: str = "none"
    filter_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    filter_meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    evicted_total: int = 0

    def __len__(self) -> int:
        return len(self.keys)

    def validate(self) -> None:
        """Raise ValueError if arrays disagree in length, width or dtype."""
        r = len(self.keys)
        for name, (dtype, ndim) in _CORE.items():
            a = getattr(self, name)
            if a.dtype != np.dtype(dtype) or a.ndim != ndim or len(a) != r:
                raise ValueError(f"snapshot {self.name!r}: {name} must be {dtype} with {ndim} dims and "
                                 f"{r} rows, got {a.dtype} {a.shape}")
        if self.values.shape[1] != self.dim:
            raise ValueError(f"snapshot {self.name!r}: values have width {self.values.shape[1]}, dim is {self.dim}")
        for name, a in self.slots.items():
            if len(a) != r:
                raise ValueError(f"snapshot {self.name!r}: slot {name!r} has {len(a)} rows, keys have {r}")
        if r > 1 and not (self.keys[1:] > self.keys[:-1]).all():
            raise ValueError(f"snapshot {self.name!r}: keys must be unique and ascending")
        # What the arrays hold: a corrupted or hand-edited export must not load and train on.
        if not np.isfinite(self.values).all():
            raise ValueError(f"snapshot {self.name!r}: values hold non-finite numbers")
        if r and self.freqs.min() < 0:
            raise ValueError(f"snapshot {self.name!r}: negative freq ({int(self.freqs.min())})")
        for name, a in self.slots.items():
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise ValueError(f"snapshot {self.name!r}: slot {name!r} holds non-finite numbers")
            if name in _NON_NEGATIVE_SLOTS and a.size and a.min() < 0:
                raise ValueError(f"snapshot {self.name!r}: slot {name!r} is negative ({float(a.min())}); "
                                 "an accumulator of squares never is")


def _entry(path: Path, fname: str, arr: np.ndarray) -> dict[str, Any]:
    np.save(path / fname, np.ascontiguousarray(arr), allow_pickle=False)
    return {"file": fname, "dtype": arr.dtype.name, "shape": list(arr.shape)}


def save_snapshot(snap: EVSnapshot, path: str | os.PathLike, since_step: int | None = None,
                  live_keys: np.ndarray | None = None) -> Path:
    """Write `snap` as an export directory at `path` (replacing one already there).

    With `since_step`, `snap` holds only the rows updated after that global step: an
    incremental export (`psrec.ev.increment`), which `load_snapshot` refuses on its own.
    `live_keys` (L,) int64 ascending: every key the table holds, when some may have been
    evicted since (else the base's keys plus the increment's are the table's)."""
    snap.validate()
    if live_keys is not None and since_step is None:
        raise ValueError(f"snapshot {snap.name!r}: live_keys belong to an incremental export (since_step)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = writer_tmpdir(path.parent, f".{path.name}.tmp-")  # a killed writer's is reclaimed here
    try:
        files = {name: _entry(tmp, f"{name}.npy", getattr(snap, name)) for name in _CORE}
        slots = {name: _entry(tmp, f"slot.{name}.npy", a) for name, a in sorted(snap.slots.items())}
        ffiles = {name: _entry(tmp, f"filter.{name}.npy", a) for name, a in sorted(snap.filter_arrays.items())}
        increment = None if since_step is None else {
            "since_step": int(since_step),
            "live_keys": None if live_keys is None else _entry(tmp, "live_keys.npy", np.asarray(live_keys, np.int64))}
        manifest = {
            "format": FORMAT_NAME,
            "format_version": 1 if increment is None else _INCREMENT_VERSION,
            "name": snap.name,
            "dim": snap.dim,
            "num_rows": len(snap),
            "step": snap.step,
            "optimizer": snap.optimizer,
            "evicted_total": snap.evicted_total,
            "files": files,
            "slots": slots,
            "filter": {"kind": snap.filter_kind, "files": ffiles, "meta": snap.filter_meta},
            "config": snap.config,
        }
        if increment is not None:
            manifest["increment"] = increment
        with open(tmp / "manifest.json", "w") as f:  # last: its presence marks a complete export
            json.dump(manifest, f, indent=1, sort_keys=True)
        for p in tmp.iterdir():  # durable before the rename makes it visible
            fsync_path(p)
        fsync_path(tmp)
        if path.exists():
            # Never delete the old export before the new one is in place: move it aside, move the
            # new one in, then delete. A kill in between leaves the aside copy, which
            # `load_snapshot` reads while `path` is missing.
            aside = _aside(path)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _aside(path: Path) -> Path:
    """Where the previous export waits while a new one replaces it."""
    return path.parent / f".{path.name}.previous"


def _load_array(path: Path, entry: dict[str, Any], what: str) -> np.ndarray:
    f = path / entry["file"]
    if not f.is_file():
        raise ValueError(f"export {path}: {what} file {entry['file']!r} is missing")
    a = np.load(f, allow_pickle=False)
    if a.dtype.name != entry["dtype"] or list(a.shape) != list(entry["shape"]):
        raise ValueError(f"export {path}: {what} is {a.dtype} {a.shape}, manifest says "
                         f"{entry['dtype']} {tuple(entry['shape'])}")
    return a


def load_snapshot(path: str | os.PathLike) -> EVSnapshot:
    """Read an export directory written by `save_snapshot` (any format version <= 2); an
    incremental one is refused (it is not the whole table)."""
    snap, since, _ = load_increment(path)
    if since is not None:
        raise ValueError(f"export {path}: an incremental export (only the rows updated after step {since}); "
                         "restore it through its checkpoint chain (psrec.core.incremental)")
    return snap


def load_increment(path: str | os.PathLike) -> tuple[EVSnapshot, int | None, np.ndarray | None]:
    """(snapshot, since_step, live_keys) of an export, full (since_step None) or incremental."""
    path, m = _manifest(path)
    core = {name: _load_array(path, m["files"][name], name) for name in _CORE}
    slots = {name: _load_array(path, e, f"slot {name}") for name, e in m["slots"].items()}
    flt = m["filter"]
    farrays = {name: _load_array(path, e, f"filter {name}") for name, e in flt["files"].items()}
    snap = EVSnapshot(name=m["name"], dim=int(m["dim"]), step=int(m["step"]), optimizer=m["optimizer"],
                      slots=slots, filter_kind=flt["kind"], filter_arrays=farrays,
                      filter_meta=flt.get("meta", {}), config=m.get("config", {}),
                      evicted_total=int(m.get("evicted_total", 0)), **core)
    snap.validate()
    inc = m.get("increment")
    if inc is None:
        return snap, None, None
    since = inc.get("since_step") if isinstance(inc, dict) else None
    if not isinstance(since, int) or isinstance(since, bool):
        raise ValueError(f"export {path}: increment.since_step must be an integer, got {since!r}")
    if len(snap) and snap.versions.min() <= since:
        raise ValueError(f"export {path}: an increment since step {since} holds a row of version "
                         f"{int(snap.versions.min())}")
    live = None
    if inc.get("live_keys") is not None:
        live = _load_array(path, inc["live_keys"], "live keys")
        if live.dtype != np.int64 or live.ndim != 1 or (len(live) > 1 and not (live[1:] > live[:-1]).all()):
            raise ValueError(f"export {path}: live keys must be unique ascending int64")
    return snap, since, live


def export_step(path: str | os.PathLike) -> int:
    """The global step an export (full or incremental) was taken at, from its manifest alone."""
    return int(_manifest(path)[1]["step"])


def _manifest(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(the export's directory, its checked manifest)."""
    path = Path(path)
    if not path.exists() and (_aside(path) / "manifest.json").is_file():
        path = _aside(path)  # a replacement was interrupted after moving the old export aside
    mf = path / "manifest.json"
    if not mf.is_file():
        raise ValueError(f"export {path}: no manifest.json (not an EV export, or an incomplete one)")
    try:
        with open(mf) as f:
            m = json.load(f)
    except ValueError as e:
        raise ValueError(f"export {path}: manifest.json is not readable JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise ValueError(f"export {path}: format is {m.get('format') if isinstance(m, dict) else m!r}, "
                         f"expected {FORMAT_NAME!r}")
    if not isinstance(m.get("format_version"), int) or m["format_version"] > FORMAT_VERSION:
        raise ValueError(f"export {path}: format_version {m.get('format_version')!r} is newer than "
                         f"this reader's {FORMAT_VERSION}")
    return path, m
