"""Incremental checkpoints (DeepRec's): a full checkpoint every `run.full_checkpoint_every`,
in between only the table rows updated since the previous checkpoint; restore = the full one
plus its increments, in order.

    step-000001000/   full: every row of every table (and dense, optimizer, steps, RNG)
    step-000002000/   increment: holds.base = step-000001000 (name, step, manifest sha256);
                      tables hold rows with version > the base's step (`psrec.ev.increment`);
                      dense parameters, optimizer state and counters are whole in every one
    step-000003000/   increment: base step-000002000, ...

`next_base` says what the next checkpoint continues (None: write a full one); `link` is what
its manifest records; `restorable(ckpt)` yields a directory laid out as a full checkpoint (the
checkpoint itself when it is full, else its chain merged into a temporary sibling, removed
afterwards), so every job's `load_state` reads one layout. `checkpoint.chain` verifies every
checkpoint of the chain (sha256 of each file) and each link, and refuses a broken one in one
line.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from psrec.core import checkpoint
from psrec.core.checkpoint import CheckpointError
from psrec.ev.export import load_increment, save_snapshot
from psrec.ev.increment import apply_increment

__all__ = ["next_base", "link", "restorable"]


def next_base(base: Path | None, full_every: int) -> Path | None:
    """What the next checkpoint continues: `base` (the checkpoint the job's state was last
    written to or restored from) while its chain holds fewer than `full_every` checkpoints,
    else None (a full one). `full_every` = 1: every checkpoint is full."""
    if base is None or full_every <= 1 or not (base / checkpoint.MANIFEST).is_file():
        return None
    return base if len(checkpoint.lineage(base)) < full_every else None


def link(base: Path | None) -> dict[str, Any]:
    """The manifest's `holds` entries of a checkpoint continuing `base` (None: a full one)."""
    return {"kind": "full"} if base is None else {"kind": "increment", "base": checkpoint.base_link(base)}


@contextlib.contextmanager
def restorable(ckpt: str | os.PathLike) -> Iterator[Path]:
    """A directory holding checkpoint `ckpt` as a full one (module doc); refuses a broken chain."""
    ckpt = Path(ckpt)
    chain = checkpoint.chain(ckpt)  # verifies each checkpoint and link
    if len(chain) == 1:
        yield ckpt
        return
    # `.tmp-step-` marks it as nobody's checkpoint: the next writer reclaims it if this process dies
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-restore-{ckpt.name[5:]}-", dir=ckpt.parent))
    try:
        _merge(chain, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge(chain: list[Path], out: Path) -> None:
    """Write the newest checkpoint of `chain` into `out` with each incremental table export
    replaced by its base plus the increments since."""
    newest = chain[-1]
    files = checkpoint.verify(newest)["files"]
    increments = {str(Path(rel).parent) for rel in files if Path(rel).name == "manifest.json"
                  and "increment" in json.loads((newest / rel).read_text())}
    for rel in files:
        if str(Path(rel).parent) in increments:
            continue
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(newest / rel, dst)  # read-only use: a hard link saves copying the dense state
        except OSError:
            shutil.copy2(newest / rel, dst)
    for rel in sorted(increments):
        parts = []  # newest first, back to the export that is whole
        for c in reversed(chain):
            if not (c / rel / "manifest.json").is_file():
                raise CheckpointError(f"checkpoint {newest}: table export {rel} is incremental and {c.name} of its "
                                      "chain has none to continue (broken increment chain)")
            parts.append(load_increment(c / rel))
            if parts[-1][1] is None:
                break
        else:
            raise CheckpointError(f"checkpoint {newest}: table export {rel} has no full export in its chain "
                                  f"({', '.join(c.name for c in chain)})")
        snap = parts[-1][0]
        for delta, since, live in reversed(parts[:-1]):
            try:
                snap = apply_increment(snap, delta, since, live)
            except ValueError as e:
                raise CheckpointError(f"checkpoint {newest}: {rel}: {e}") from None
        save_snapshot(snap, out / rel)
