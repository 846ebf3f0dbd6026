"""psrec: train CTR models with parameter servers and with collectives, side by side, and see
where the time goes.

    >>> import psrec
    >>> cfg = psrec.load_config(overrides=["data.train_rows=4096", "data.eval_rows=1024"])  # doctest: +SKIP
    >>> res = psrec.train(cfg, mode="ps")                                    # doctest: +SKIP
    >>> res.auc, res.samples_per_s, res.comm_fraction, res.path             # doctest: +SKIP

The package map (each package's own docstring says more):

    psrec.core        THE training step, the run skeleton, RunResult, row ranges, flat parameters
    psrec.ps          parameter servers: shards, partitioners, client, transports, workers, runner
    collective        (top level) sharded embeddings over all-to-all, bucketed all-reduce, runner
    workqueue         (top level) the work-queue actor, its policies, the straggler model
    psrec.comm        the collective-communication seam both distributed paths share
    psrec.embedding   the embedding layer and the store seam (local, PS, collective)
    psrec.ev          DeepRec-style embedding variables
    psrec.models      CTR models and their registry
    psrec.data        data sources serving row ranges, and how they travel to workers
    psrec.sim         the cost-model simulator (pure functions; no runtime code)
    psrec.experiments incremental training, filter sweep, model zoo, FDO
    psrec.metrics     AUC, logloss, Prometheus export
    psrec.commands    the `psrec` CLI's subcommands
"""
from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily below: `import psrec` stays cheap and cycle-free
    from psrec.config import Config
    from psrec.core.result import RunResult
    from psrec.data.base import DataSource

__all__ = ["__version__", "load_config", "train", "compare", "load_model", "RunResult", "MODES"]

try:
    __version__ = _metadata.version("psrec")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

MODES = ("local", "ps", "collective")


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults <- `base` <- TOML file at `path` <- `overrides` ("section.key=value").

    An unknown key or a wrongly typed value raises `psrec.config.ConfigError` naming the key."""
    from psrec.config import load_config as _load

    return _load(path, list(overrides), base=base)


def train(cfg: Config, mode: str = "local", source: DataSource | None = None, run_dir: str | None = None) -> RunResult:
    """Train `cfg` in one mode and evaluate on the held-out rows; writes a run directory.

    Args:
        cfg: from `load_config`.
        mode: "local" (this process), "ps" (parameter servers: `[ps]`; on Ray unless
            `ps.transport = "inprocess"`) or "collective" (all-to-all + all-reduce: `[collective]`).
        source: a `psrec.data.DataSource` to train on instead of the configured one; every
            worker of every mode trains its rows (it travels to Ray workers).
        run_dir: where to write (default: a new directory under `run.dir`).
    """
    from pathlib import Path

    path = Path(run_dir) if run_dir is not None else None
    if mode == "local":
        from psrec.core.local import run_local

        return run_local(cfg, path, source)
    if mode == "ps":
        from psrec.ps.runner import run_ps

        return run_ps(cfg, path, source)
    if mode == "collective":
        from collective.runner import run_collective

        return run_collective(cfg, path, source)
    raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")


def compare(cfg: Config, modes: tuple[str, ...] | list[str] | None = None, run_dir: str | None = None) -> dict:
    """`psrec compare` from Python: the same job in several modes, one after another.

    `modes`: a subset of local, ps-async, ps-sync, hybrid, collective (default: all). Returns
    mode -> `RunResult`; each writes into `<run_dir>/<mode>/`."""
    from pathlib import Path

    from psrec.commands.compare import MODES as _ALL
    from psrec.commands.compare import run_modes
    from psrec.runs import make_run_dir

    modes = list(modes or _ALL)
    bad = [m for m in modes if m not in _ALL]
    if bad:
        raise ValueError(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(_ALL)}")
    return run_modes(cfg, modes, Path(run_dir) if run_dir is not None else make_run_dir(cfg, "compare"))


def load_model(path: str):
    """The model a run saved (`path`: its run directory, its `model/`, or a `psrec export` copy):
    `.predict(batch)` gives click probabilities, `.evaluate(source, start, end)` AUC and logloss."""
    from psrec.core.saved_model import load_model as _load

    return _load(path)


def __getattr__(name: str):
    if name == "RunResult":
        from psrec.core.result import RunResult

        return RunResult
    raise AttributeError(f"module 'psrec' has no attribute {name!r}")
