"""Feature admission (`min_freq`) and TTL eviction (`steps_to_live`) vs storage and AUC.

The design note: filtering ids by frequency and staleness inside training saved ~50% of the
offline feature storage without hurting the model. This runner trains the same model on the
same rows once per setting of a grid `min_freqs x ttls` (the first, min_freq 1 and no TTL,
is the baseline) and reports, per setting:

    rows        keys holding an embedding row at the end (after the final eviction)
    waiting     keys the admission filter still counts (seen < min_freq times)
    bytes       size of the checkpoint an export would write now: keys, values, freq/version,
                optimizer slots and the filter's waiting keys and counts, in bytes (the
                arrays of `EmbeddingVariable.snapshot()`, i.e. `export` minus file headers)
    mem_bytes   memory the tables hold (`EVStats.bytes`: arrays at capacity, hash tables,
                filter); evicted rows are reused by new keys, arrays never shrink
    bytes_share bytes / baseline bytes
    auc, auc_delta   held-out AUC and its difference to the baseline (same rows, same seed)

Eviction runs where a checkpointing job runs it (DeepRec evicts at save time): every
`evict_every` global steps, and once more at the end (the final export). A key is stale when
its version (last update step) is older than `step - steps_to_live`.

The "best" setting is the one with the fewest bytes whose AUC is at least the baseline's
minus `auc_tolerance`; `best_bytes_saved` = 1 - its bytes_share.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from psrec.config import Config
from psrec.config_io import to_mapping
from psrec.core.local import build_local, evaluate, train_range
from psrec.core.ranges import row_ranges
from psrec.data.base import DataSource
from psrec.data.factory import make_source
from psrec.embedding.local import LocalStore
from psrec.runs import make_run_dir, write_results

__all__ = ["FilterSetting", "FilterSweepConfig", "run_filter_sweep", "export_bytes"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class FilterSetting:
    """One point of the sweep: admission threshold and time to live.

    Args:
        min_freq: occurrences a key needs before it gets a row; 1 = no admission filter.
        steps_to_live: evict keys not updated for this many global steps; 0 = never.
    """

    min_freq: int = 1
    steps_to_live: int = 0

    def __post_init__(self) -> None:
        if self.min_freq < 1 or self.steps_to_live < 0:
            raise ValueError(f"min_freq must be >= 1 and steps_to_live >= 0, got {self}")

    @property
    def label(self) -> str:
        """A short name: "none", "mf3", "ttl100" or "mf3+ttl100"."""
        parts = ([f"mf{self.min_freq}"] if self.min_freq > 1 else []) + (
            [f"ttl{self.steps_to_live}"] if self.steps_to_live else [])
        return "+".join(parts) or "none"


@dataclass(frozen=True)
class FilterSweepConfig:
    """The grid and the eviction schedule.

    Args:
        min_freqs: admission thresholds to try (1 = no filter).
        ttls: steps_to_live values to try, in global steps (0 = no TTL).
        evict_every: global steps between eviction passes (the checkpoint period).
        filter_kind: the admission filter used when min_freq > 1.
        auc_tolerance: AUC a setting may lose against the baseline and still count as "no loss".

    Example:
        >>> [s.label for s in FilterSweepConfig(min_freqs=(1, 2), ttls=(0, 50)).settings()]
        ['none', 'ttl50', 'mf2', 'mf2+ttl50']
    """

    min_freqs: tuple[int, ...] = (1, 2, 4)  # 2: one-off ids get no row; 4: only ids seen a few times
    # With the sweep's default 100K rows at batch 1024 (98 steps): a key must recur within
    # ~20% / ~50% of the run to keep its row.
    ttls: tuple[int, ...] = (0, 20, 50)
    evict_every: int = 10  # ~10K rows at batch 1024: a checkpoint several times per TTL
    filter_kind: Literal["counter", "bloom"] = "counter"  # exact counts; bloom trades them for fixed memory
    auc_tolerance: float = 0.001  # below the AUC noise of paired runs on 50K held-out rows

    def __post_init__(self) -> None:
        if not self.min_freqs or any(m < 1 for m in self.min_freqs):
            raise ValueError(f"min_freqs must be non-empty and >= 1, got {self.min_freqs}")
        if not self.ttls or any(t < 0 for t in self.ttls):
            raise ValueError(f"ttls must be non-empty and >= 0, got {self.ttls}")
        if self.evict_every < 1:
            raise ValueError(f"evict_every must be >= 1, got {self.evict_every}")
        if self.auc_tolerance < 0:
            raise ValueError(f"auc_tolerance must be >= 0, got {self.auc_tolerance}")

    def settings(self) -> list[FilterSetting]:
        """The grid, baseline (1, 0) first, each setting once."""
        grid = [FilterSetting(m, t)
                for m, t in itertools.product(sorted(set(self.min_freqs)), sorted(set(self.ttls)))]
        base = FilterSetting()
        return [base] + [s for s in grid if s != base]


def export_bytes(store: LocalStore) -> int:
    """Bytes of the arrays an export of `store` writes (all tables; no file headers)."""
    total = 0
    for name in store.table_names:
        s = store.variable(name).snapshot()
        arrays = [s.keys, s.values, s.freqs, s.versions, *s.slots.values(), *s.filter_arrays.values()]
        total += sum(a.nbytes for a in arrays)
    return total


def _configure(cfg: Config, s: FilterSetting, kind: str) -> Config:
    emb = cfg.embedding
    if s.min_freq == 1:
        flt = replace(emb.filter, kind="none")
    else:
        flt = replace(emb.filter, kind=kind, min_freq=s.min_freq)
    return replace(cfg, embedding=replace(emb, filter=flt, steps_to_live=s.steps_to_live))


def _run_setting(cfg: Config, source: DataSource, s: FilterSetting,
                 sweep: FilterSweepConfig) -> dict[str, Any]:
    setup = build_local(_configure(cfg, s, sweep.filter_kind), source)
    rr = row_ranges(cfg, source)
    bs = cfg.data.batch_size
    steps, evicted, t0 = 0, 0, time.perf_counter()
    start = rr.train_start
    while start < rr.train_end:
        # One checkpoint period of training, then the eviction a checkpoint would run.
        end = min(start + sweep.evict_every * bs, rr.train_end)
        steps += train_range(setup.step, source, start, end, bs, first_step=steps + 1).steps
        start = end
        if s.steps_to_live:
            evicted += sum(r.rows_evicted for r in setup.store.evict(steps).values())
    seconds = time.perf_counter() - t0
    stats = setup.store.stats().values()
    return {
        "setting": s.label, "min_freq": s.min_freq, "steps_to_live": s.steps_to_live,
        "rows": sum(x.rows for x in stats), "waiting": sum(x.waiting for x in stats),
        "evicted": evicted, "bytes": export_bytes(setup.store), "mem_bytes": sum(x.bytes for x in stats),
        "auc": evaluate(setup.step, source, rr.eval_start, rr.eval_end, bs)["auc"],
        "steps": steps, "train_seconds": seconds,
    }


def run_filter_sweep(cfg: Config, sweep: FilterSweepConfig, run_dir: Path | None = None,
                     log: Log | None = None) -> dict[str, Any]:
    """Train once per setting; write results.json and filter_sweep.png into the run directory.

    cfg: the run configuration; its [embedding] filter kind/min_freq and steps_to_live are
        replaced per setting, everything else (data ranges, model, optimizer, seed) is shared.
    """
    log = log or (lambda s: None)
    source = make_source(cfg)
    rr = row_ranges(cfg, source)  # fail on bad ranges before any training
    named = cfg
    if run_dir:  # a caller-chosen directory goes through make_run_dir too (created, config.toml written)
        named = replace(cfg, run=replace(cfg.run, dir=str(Path(run_dir).parent), name=Path(run_dir).name))
    run_dir = make_run_dir(named, "filter-sweep", reuse=named is not cfg)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for s in sweep.settings():
        r = _run_setting(cfg, source, s, sweep)
        rows.append(r)
        log(f"{r['setting']:>12}: rows={r['rows']:,} bytes={r['bytes']:,} auc={r['auc']:.4f} "
            f"({r['train_seconds']:.1f} s)")
    base = rows[0]
    for r in rows:
        r["bytes_share"] = r["bytes"] / base["bytes"] if base["bytes"] else float("nan")
        r["auc_delta"] = r["auc"] - base["auc"]
    ok = [r for r in rows if r["auc_delta"] >= -sweep.auc_tolerance]
    best = min(ok, key=lambda r: (r["bytes"], -r["auc"]))  # the baseline itself always qualifies
    summary = {"best_setting": best["setting"], "best_bytes_saved": 1.0 - best["bytes_share"],
               "auc_delta_at_best": best["auc_delta"], "baseline_auc": base["auc"],
               "baseline_bytes": base["bytes"], "auc_tolerance": sweep.auc_tolerance}
    plot = _plot(run_dir / "filter_sweep.png", rows, best["setting"])
    results = {
        "mode": "filter-sweep", "model": cfg.model.name, "sweep": to_mapping(sweep),
        "ranges": rr.__dict__, "settings": rows, "summary": summary,
        "seconds": time.perf_counter() - t0, "plot": str(plot), "run_dir": str(run_dir),
    }
    write_results(run_dir, results)
    return results


def _plot(path: Path, rows: list[dict[str, Any]], best: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        marker = "*" if r["setting"] == best else "o"
        ax.scatter(r["bytes_share"], r["auc"], marker=marker, s=120 if marker == "*" else 40)
        ax.annotate(r["setting"], (r["bytes_share"], r["auc"]), textcoords="offset points", xytext=(5, 4),
                    fontsize=8)
    ax.axhline(rows[0]["auc"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("checkpoint bytes / baseline (no filter, no TTL)")
    ax.set_ylabel("held-out AUC")
    ax.set_title("Admission filter and TTL eviction: storage vs AUC (* = best within tolerance)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
