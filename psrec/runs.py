"""Run directories: every run writes its resolved configuration and its results here."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from psrec.config import Config

__all__ = ["make_run_dir", "write_results", "read_results"]


def make_run_dir(cfg: Config, mode: str, reuse: bool = False) -> Path:
    """Create `<run.dir>/<run.name or time-mode-model>` and write `config.toml` into it.

    A run never overwrites another: when the directory already holds one (a `config.toml`),
    the first free `<name>-2`, `<name>-3`, ... is taken, and a named run says so on stderr.
    `reuse=True`: the caller chose this very directory (created if absent, used as it is)."""
    name = cfg.run.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}-{cfg.model.name}"
    first = path = Path(cfg.run.dir) / name
    n = 1
    while not reuse and (path / "config.toml").exists():
        n += 1
        path = Path(cfg.run.dir) / f"{name}-{n}"
    if path != first and cfg.run.name:
        print(f"psrec: run directory {first} holds a run already; this run writes to {path}", file=sys.stderr)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(cfg.to_toml())
    return path


def _clean(v: Any) -> Any:
    # JSON has no NaN: write null so that any reader can parse the file.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / "results.json"
    path.write_text(json.dumps(_clean(results), indent=2, sort_keys=True) + "\n")
    return path


def read_results(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "results.json").read_text())
