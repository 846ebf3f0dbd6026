"""Run directories: every run writes its resolved configuration and its results here."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from psrec.config import Config

__all__ = ["make_run_dir", "write_results", "read_results"]


def make_run_dir(cfg: Config, mode: str) -> Path:
    """Create `<run.dir>/<run.name or time-mode-model>` and write `config.toml` into it."""
    name = cfg.run.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{mode}-{cfg.model.name}"
    path = Path(cfg.run.dir) / name
    n = 1
    while path.exists() and not cfg.run.name:  # two runs in the same second
        n += 1
        path = Path(cfg.run.dir) / f"{name}-{n}"
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
