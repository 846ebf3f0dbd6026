"""Incremental (warm-start) training over drifting synthetic days.

The design note: "a new model version automatically reuses the old model's parameters where
they still fit; new parameters are randomly initialised", and after 30 days of daily training
such a new version recovers 70-80% of the AUC gain. This runner measures that share.

Timeline (day d is `SyntheticConfig(day=d)`: each day a share `synthetic.drift` of the
(field, popularity-rank) slots is taken over by new ids):

    days 1..K          the old version trains, one pass per day, in day order
    after day K        its tables are snapshotted and its dense state_dict copied
    days K+1..K+M      three models train on each day and are evaluated on that day:
                         long  the old version, continuing (what the new version could be at best)
                         warm  the new version, warm-started from the day-K old model
                         cold  the new version, from a fresh initialisation

The new version is a changed configuration (`new_overrides`, by default one more MLP layer;
`drop_fields` removes fields): `psrec.ev.warm_start` migrates the embedding tables (keys of a
dropped field are dropped) and `psrec.ev.warm_start_dense` copies dense tensors whose name
and shape still match. Their reports are returned and printed.

Rows of day d: training `[d*S, d*S + rows_per_day)`, held out `[d*S + rows_per_day,
d*S + rows_per_day + eval_rows)` with S = rows_per_day + eval_rows, so no two days share
a row (a row index draws the same popularity ranks on every day). Each model trained on
day d is evaluated on day d's held-out rows.

Recovered share. Per day d: share_d = (AUC_warm,d - AUC_cold,d) / (AUC_long,d - AUC_cold,d),
the part of the long-trained model's lead over a cold start that the warm start keeps. The
summary `recovered_share` is the ratio of the means over the M days,
(mean AUC_warm - mean AUC_cold) / (mean AUC_long - mean AUC_cold), which does not blow up
on a day where the cold model has nearly caught up; `first_day_share` is share_{K+1}.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from psrec.config import Config, ConfigError, load_config
from psrec.config_io import to_mapping
from psrec.core.local import LocalSetup, build_local, evaluate, train_range
from psrec.core.step import TrainStep
from psrec.data.base import Batch, DataSource
from psrec.data.keys import key_field
from psrec.data.synthetic import SyntheticSource
from psrec.embedding.local import LocalStore, table_seed
from psrec.ev import DenseWarmStartReport, WarmStartReport, warm_start, warm_start_dense
from psrec.runs import make_run_dir, write_results

__all__ = ["IncrementalConfig", "DropFields", "run_incremental", "dense_summary"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class IncrementalConfig:
    """The day schedule and the change that makes the new model version.

    Args:
        train_days: K, days the old version trains on before the new version is made.
        eval_days: M, days after K on which long, warm and cold models train and are compared.
        rows_per_day: training rows per day.
        eval_rows: held-out rows per day.
        new_overrides: "section.key=value" changes from the old configuration to the new one.
        drop_fields: field names (e.g. "C5") the new version no longer reads.

    Example:
        >>> IncrementalConfig(train_days=2, eval_days=1).new_overrides
        ('model.params.hidden=[256,128,64,32]',)
    """

    train_days: int = 6  # 6 x 50K rows: the old model is well ahead of a one-day model (~0.02 AUC)
    eval_days: int = 4  # enough days to see the cold model catch up
    rows_per_day: int = 50_000  # ~2 s a day for DeepFM on one core; 14 training days in all
    eval_rows: int = 20_000  # AUC std error ~0.004; the three models share the rows, so deltas are tighter
    # The default DeepFM is (256, 128, 64): one more layer leaves the output layer mismatched
    # and the new layer fresh, while embeddings and the first three layers still fit.
    new_overrides: tuple[str, ...] = ("model.params.hidden=[256,128,64,32]",)
    drop_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.train_days < 1 or self.eval_days < 1:
            raise ValueError("train_days and eval_days must be >= 1")
        if self.train_days + self.eval_days >= 1024:
            raise ValueError("train_days + eval_days must be < 1024 (the generator's day limit)")
        if self.rows_per_day < 1 or self.eval_rows < 1:
            raise ValueError("rows_per_day and eval_rows must be >= 1")
        if len(set(self.drop_fields)) != len(self.drop_fields):
            raise ValueError(f"drop_fields repeats a field: {self.drop_fields}")

    def day_rows(self, day: int) -> tuple[int, int, int]:
        """(train start, train end = eval start, eval end) row indices of `day`."""
        start = day * (self.rows_per_day + self.eval_rows)
        return start, start + self.rows_per_day, start + self.rows_per_day + self.eval_rows


class DropFields(DataSource):
    """A source without some of its fields: the view of a model version that stopped reading them.

    Keys keep their field tags, so a key means the same id in the old and the new version.

    Args:
        source: the full source.
        names: field names to remove (each must exist).
    """

    def __init__(self, source: DataSource, names: tuple[str, ...]) -> None:
        schema = source.schema
        all_names = [f.name for f in schema.fields]
        unknown = [n for n in names if n not in all_names]
        if unknown:
            raise ValueError(f"drop_fields: unknown field(s) {unknown}; fields: {', '.join(all_names)}")
        if len(names) >= len(all_names):
            raise ValueError("drop_fields would remove every field")
        self.source = source
        self.dropped = tuple(all_names.index(n) for n in names)  # indices in the full schema
        kept = [i for i in range(schema.num_fields) if i not in self.dropped]
        self.schema = replace(schema, fields=tuple(schema.fields[i] for i in kept))
        self._single_cols = np.array([c for c, f in enumerate(schema.single_fields) if f in kept], np.int64)
        self._multi = [j for j, f in enumerate(schema.multi_fields) if f in kept]

    @property
    def num_rows(self) -> int:
        return self.source.num_rows

    def read(self, start: int, end: int) -> Batch:
        b = self.source.read(start, end)
        return Batch(keys=np.ascontiguousarray(b.keys[:, self._single_cols]), dense=b.dense, labels=b.labels,
                     start=b.start, multi=[b.multi[j] for j in self._multi])


@dataclass
class _Model:
    """One model of the comparison and how far its global step has gone."""

    name: str
    setup: LocalSetup
    steps: int = 0  # global steps applied so far (the next one is steps + 1)

    def train_day(self, source: DataSource, rows: tuple[int, int, int], batch_size: int) -> float:
        s = train_range(self.setup.step, source, rows[0], rows[1], batch_size, first_step=self.steps + 1)
        self.steps += s.steps
        return s.seconds

    def eval_day(self, source: DataSource, rows: tuple[int, int, int], batch_size: int) -> float:
        return evaluate(self.setup.step, source, rows[1], rows[2], batch_size)["auc"]


def _new_config(old: Config, overrides: tuple[str, ...]) -> Config:
    new = load_config(None, list(overrides), base=old.to_dict())
    if new.synthetic != old.synthetic or new.data.source != old.data.source:
        raise ConfigError("new_overrides: the new version must read the same data (change neither "
                          "[synthetic] nor data.source)")
    return new


def _warm_started(new_cfg: Config, source: DataSource, old: LocalSetup,
                  dropped_fields: tuple[int, ...]
                  ) -> tuple[LocalSetup, WarmStartReport, DenseWarmStartReport]:
    """The new version, freshly built (same seed as the cold one), then warm-started from `old`.

    The old tables are passed as in-memory snapshots: the same data an export directory
    holds (`LocalStore.export`), without writing hundreds of MB per run.
    """
    fresh = build_local(new_cfg, source)
    tables = {t.name: new_cfg.embedding.ev_config(int(t.dim), table_seed(new_cfg.train.seed, t.name))
              for t in fresh.layer.tables}
    old_store = old.store
    snaps = {name: [old_store.variable(name).snapshot()] for name in old_store.table_names}
    keep = None
    if dropped_fields:
        gone = np.array(dropped_fields, np.int64)
        keep = {name: (lambda k: ~np.isin(key_field(k), gone)) for name in tables}
    variables, report = warm_start(tables, snaps, keep=keep)
    store = LocalStore.from_variables(variables)
    dense = warm_start_dense(fresh.model, old.model.state_dict())
    # The dense optimizer holds the model's own parameter objects (copied into in place), so it
    # carries over; it has no state yet.
    step = TrainStep(fresh.model, fresh.layer, store, fresh.step.dense)
    return LocalSetup(source, fresh.model, store, fresh.layer, step), report, dense


def dense_summary(r: DenseWarmStartReport) -> str:
    """Human-readable lines of a dense warm-start report."""
    lines = [f"dense: {len(r.copied)} tensors copied ({', '.join(r.copied) or '-'})"]
    lines += [f"dense: {n} mismatched {tuple(o)} -> {tuple(s)}: freshly initialised"
              for n, o, s in r.mismatched]
    lines += [f"dense: {n} new: freshly initialised" for n in r.new]
    lines += [f"dense: {n} dropped (not in the new model)" for n in r.dropped]
    return "\n".join(lines)


def _share(warm: float, cold: float, long: float) -> float:
    gain = long - cold
    return (warm - cold) / gain if gain > 0 else math.nan


def run_incremental(cfg: Config, exp: IncrementalConfig, run_dir: Path | None = None,
                    log: Log | None = None) -> dict[str, Any]:
    """Run the schedule of the module docstring; write results.json and auc_per_day.png.

    cfg: the old version's configuration (data.source must be synthetic; synthetic.day must
        be 0: the runner sets each day itself). The new version is cfg + `exp.new_overrides`
        minus `exp.drop_fields`. Returns the results dict (also in results.json).
    """
    log = log or (lambda s: None)
    if cfg.data.source != "synthetic":
        raise ConfigError("data.source: incremental training needs the synthetic source (its days drift)")
    if cfg.synthetic.day != 0:
        raise ConfigError("synthetic.day: must be 0; the incremental runner sets each day itself")
    new_cfg = _new_config(cfg, exp.new_overrides)
    named = cfg
    if run_dir:  # a caller-chosen directory goes through make_run_dir too (created, config.toml written)
        named = replace(cfg, run=replace(cfg.run, dir=str(Path(run_dir).parent), name=Path(run_dir).name))
    run_dir = make_run_dir(named, "incremental", reuse=named is not cfg)
    (run_dir / "config_new.toml").write_text(new_cfg.to_toml())
    bs = cfg.data.batch_size
    t_start = time.perf_counter()
    k, m = exp.train_days, exp.eval_days

    def day_source(d: int) -> SyntheticSource:
        return SyntheticSource(replace(cfg.synthetic, day=d))

    def new_view(src: DataSource) -> DataSource:
        return DropFields(src, exp.drop_fields) if exp.drop_fields else src

    first = day_source(1)
    try:  # check the dropped fields now, not after K days of training
        new_view(first)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    long = _Model("long", build_local(cfg, first))
    history = []
    for d in range(1, k + 1):
        src = first if d == 1 else day_source(d)
        rows = exp.day_rows(d)
        secs = long.train_day(src, rows, bs)
        history.append({"day": d, "long_auc": long.eval_day(src, rows, bs)})
        log(f"day {d:3d}  old version trained ({secs:.1f} s)  auc={history[-1]['long_auc']:.4f}")

    old_tables = to_mapping(long.setup.store.stats())  # the old version as it was warm-started from
    src = day_source(k + 1)
    view = new_view(src)
    dropped_idx = view.dropped if isinstance(view, DropFields) else ()
    warm_setup, ev_report, dense_report = _warm_started(new_cfg, view, long.setup, dropped_idx)
    warm = _Model("warm", warm_setup, steps=long.steps)  # global steps (EV versions) carry on
    cold = _Model("cold", build_local(new_cfg, view))
    migration = ev_report.summary() + "\n" + dense_summary(dense_report)
    log("warm start of the new version:\n" + migration)

    days = []
    for d in range(k + 1, k + m + 1):
        if d > k + 1:
            src = day_source(d)
            view = new_view(src)
        rows = exp.day_rows(d)
        row: dict[str, Any] = {"day": d}
        for model, data in ((long, src), (warm, view), (cold, view)):
            model.train_day(data, rows, bs)
            row[f"{model.name}_auc"] = model.eval_day(data, rows, bs)
        row["gain"] = row["long_auc"] - row["cold_auc"]
        row["recovered"] = _share(row["warm_auc"], row["cold_auc"], row["long_auc"])
        days.append(row)
        log(f"day {d:3d}  long={row['long_auc']:.4f} warm={row['warm_auc']:.4f} cold={row['cold_auc']:.4f}")

    mean = {n: float(np.mean([r[f"{n}_auc"] for r in days])) for n in ("long", "warm", "cold")}
    summary = {
        "train_days": k, "eval_days": m,
        "warm_auc": mean["warm"], "cold_auc": mean["cold"], "long_auc": mean["long"],
        "recovered_share": _share(mean["warm"], mean["cold"], mean["long"]),
        "first_day_share": days[0]["recovered"],
    }
    plot = _plot(run_dir / "auc_per_day.png", history, days, k)
    results: dict[str, Any] = {
        "mode": "incremental",
        "model": cfg.model.name,
        "experiment": to_mapping(exp),
        "new_overrides": list(exp.new_overrides),
        "summary": summary,
        "history": history,
        "days": days,
        "migration": {"tables": to_mapping(ev_report), "dense": to_mapping(dense_report), "text": migration},
        "old_tables": old_tables,
        "tables_after": {n: to_mapping(x.setup.store.stats()) for n, x in (("long", long), ("warm", warm),
                                                                          ("cold", cold))},
        "seconds": time.perf_counter() - t_start,
        "plot": str(plot),
        "run_dir": str(run_dir),
    }
    write_results(run_dir, results)
    return results


def _plot(path: Path, history: list[dict], days: list[dict], k: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    hd = [r["day"] for r in history] + [r["day"] for r in days]
    ax.plot(hd, [r["long_auc"] for r in history + days], "o-", label="long (old version continues)")
    dd = [r["day"] for r in days]
    ax.plot(dd, [r["warm_auc"] for r in days], "s-", label="warm (new version, warm-started)")
    ax.plot(dd, [r["cold_auc"] for r in days], "^-", label="cold (new version, fresh)")
    ax.axvline(k + 0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("day")
    ax.set_ylabel("held-out AUC of that day")
    ax.set_title("Incremental training: warm start vs cold start")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
