"""Field-dimension optimisation (FDO, from the GDCN paper; anonctr/GDCN utils/FieldDimOpt.py).

    1. train a model at one width d for every field;
    2. per field, PCA of that field's trained embedding rows; the field's new width is the
       number of components that explains `threshold` of the variance;
    3. retrain from scratch with those per-field widths; compare AUC and size.

The reference fits sklearn's PCA to every row of a field's vocabulary (ids below 20
occurrences already folded into one). Our tables hold every id seen, most of them seen once,
and such a row is its random initial value plus an update or two: isotropic noise that
would ask for the full width. Rows are therefore weighted by their occurrence count (the EV's
`freq`), i.e. the PCA describes the embeddings as the model meets them in the data;
`weighting="uniform"` gives the reference's unweighted PCA.

Needs a model that accepts per-field widths (DNN and the DCN family; FM-style models need
one width). Layering: a runner, like `psrec.experiments.zoo`, whose data and fit helpers it uses.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from psrec.config import Config, ModelConfig, with_section
from psrec.data.keys import key_field
from psrec.embedding.local import LocalStore
from psrec.experiments.zoo import experiment_data, fit
from psrec.metrics.delong import delong_diff
from psrec.models import FeatureSpec, build_model, model_names
from psrec.report.table import format_table
from psrec.runs import write_results

__all__ = ["FDOConfig", "FieldDim", "FDOReport", "accepts_field_dims", "pca_dim", "field_dims_from_store",
           "run_fdo"]


@dataclass(frozen=True)
class FDOConfig:
    """What `psrec fdo` does.

    Args:
        model: a registered model that accepts per-field widths.
        threshold: share of a field's embedding variance its new width must explain.
        weighting: "frequency" (rows weighted by occurrences) or "uniform" (the reference).
        min_dim: smallest width a field may get.
        train_rows, eval_rows: rows for both trainings (the same rows, one pass each).
    """

    model: str = "dnn"  # the simplest model with per-field widths; dcn_v2 works too
    threshold: float = 0.9  # the reference sweeps 0.5-0.95; 0.9 keeps most of the signal
    weighting: Literal["frequency", "uniform"] = "frequency"
    min_dim: int = 1
    train_rows: int = 300_000  # the zoo's budget, so "before" matches the zoo's DNN row
    eval_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.model not in model_names():
            raise ValueError(f"unknown model {self.model!r}; known: {', '.join(model_names())}")
        if not accepts_field_dims(self.model):
            raise ValueError(f"model {self.model!r} needs one embedding width for all fields; "
                             "FDO needs one that accepts per-field widths (dnn, dcn, dcn_v2, ...)")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"fdo threshold must be in (0, 1], got {self.threshold}")
        if self.weighting not in ("frequency", "uniform"):
            raise ValueError(f"fdo weighting must be frequency or uniform, got {self.weighting!r}")
        if self.min_dim < 1:
            raise ValueError(f"fdo min_dim must be >= 1, got {self.min_dim}")
        if self.train_rows < 1 or self.eval_rows < 2:
            raise ValueError("fdo train_rows must be >= 1 and eval_rows >= 2")


def accepts_field_dims(name: str) -> bool:
    """Whether the registered model builds with unequal per-field widths (its defaults, a tiny spec)."""
    try:
        build_model(name, FeatureSpec(2, (4, 2), 1))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class FieldDim:
    """One field's PCA result: rows seen, old and new width, variance the new width explains."""

    field: int
    name: str
    rows: int
    dim_before: int
    dim_after: int
    explained: float


def pca_dim(values: np.ndarray, weights: np.ndarray | None, threshold: float, min_dim: int = 1) -> tuple[int, float]:
    """Smallest k whose top-k principal components explain >= `threshold` of the variance.

    values: (R, d) rows; weights: (R,) non-negative row weights (None = equal). Returns
    (k, share explained by k), k in [min_dim, d]. A field without variance (one row, or all
    rows equal) gets `min_dim`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(500, 1)) @ np.ones((1, 8)) + 0.01 * rng.normal(size=(500, 8))
        >>> pca_dim(x, None, 0.9)[0]
        1
    """
    r, d = values.shape
    w = np.ones(r) if weights is None else np.asarray(weights, dtype=np.float64)
    if r == 0 or w.sum() <= 0:
        return min_dim, 1.0
    x = values.astype(np.float64)
    mu = w @ x / w.sum()  # (d,)
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc / w.sum()  # (d, d)
    eig = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)  # descending
    total = eig.sum()
    if total <= 1e-30:
        return min_dim, 1.0
    share = np.cumsum(eig) / total
    k = int(np.searchsorted(share, threshold - 1e-12) + 1)  # first k with share >= threshold
    k = min(max(k, min_dim), d)
    return k, float(share[k - 1])


def field_dims_from_store(store: LocalStore, tables, field_names: list[str], fdo: FDOConfig) -> list[FieldDim]:
    """PCA every field's rows in the trained tables; `tables` from the embedding layer (TableSpec)."""
    out: dict[int, FieldDim] = {}
    for t in tables:
        if t.role != "field":
            continue
        snap = store.variable(t.name).snapshot()
        fields = key_field(snap.keys)
        for f in t.fields:
            mine = fields == f
            w = snap.freqs[mine].astype(np.float64) if fdo.weighting == "frequency" else None
            k, share = pca_dim(snap.values[mine], w, fdo.threshold, fdo.min_dim)
            out[f] = FieldDim(f, field_names[f], int(mine.sum()), t.dim, k, share)
    return [out[f] for f in sorted(out)]


@dataclass
class FDOReport:
    """Per-field widths and the two trainings' results (before: fixed width, after: FDO widths)."""

    fields: list[FieldDim]
    before: dict[str, Any]
    after: dict[str, Any]
    config: FDOConfig
    run_dir: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"mode": "fdo", "config": dict(self.config.__dict__), "fields": [f.__dict__ for f in self.fields],
                "field_dims": [f.dim_after for f in self.fields], "before": self.before, "after": self.after,
                "run_dir": str(self.run_dir) if self.run_dir else None}

    def text(self) -> str:
        c = self.config
        fields = format_table([f.__dict__ for f in self.fields],
                              ["field", "name", "rows", "dim_before", "dim_after", "explained"],
                              ["field", "name", "rows", "dim before", "dim after", "variance kept"])
        runs = format_table([{"run": f"before (d={self.fields[0].dim_before} every field)", **self.before},
                             {"run": "after (FDO dims)", **self.after}],
                            ["run", "auc", "logloss", "emb_params", "dense_params", "samples_per_s"],
                            ["run", "auc", "logloss", "embedding params (rows x dims)", "dense params", "samples/s"])
        ratio = self.after["emb_params"] / max(self.before["emb_params"], 1)
        return "\n".join([
            f"FDO on {c.model}: PCA per field ({c.weighting}-weighted rows), keep {c.threshold:.0%} of the variance",
            fields, "", runs,
            f"dims: {','.join(str(f.dim_after) for f in self.fields)}  (set embedding.field_dims to reuse)",
            f"embedding params x{ratio:.3f}; AUC {self.after['auc']:.4f} vs {self.before['auc']:.4f} "
            f"({self.after['vs_before']:+.4f} +- {self.after['vs_before_se']:.4f} DeLong SE)",
        ])


def run_fdo(cfg: Config, fdo: FDOConfig, run_dir: Path | None = None,
            log: Callable[[str], None] = print) -> FDOReport:
    """Train at `embedding.dim`, pick per-field widths by PCA, retrain with them on the same rows."""
    cfg, source, rr, _ = experiment_data(cfg, fdo.train_rows, fdo.eval_rows)
    params = cfg.model.params if cfg.model.name == fdo.model else {}
    base = with_section(cfg, model=ModelConfig(name=fdo.model, params=params),
                        embedding=replace(cfg.embedding, field_dims=()))
    before = fit(base, source, rr, label=f"{fdo.model} d={cfg.embedding.dim}")
    log(f"  before: auc {before.row['auc']:.4f}, embedding params {before.row['emb_params']:,}")
    names = [f.name for f in source.schema.fields]
    fields = field_dims_from_store(before.setup.store, before.setup.layer.tables, names, fdo)
    before.setup = None
    dims = tuple(f.dim_after for f in fields)
    log(f"  FDO dims: {','.join(map(str, dims))}")
    after_cfg = with_section(base, embedding=replace(base.embedding, field_dims=dims))
    after = fit(after_cfg, source, rr, label=f"{fdo.model} fdo")
    after.row["vs_before"], after.row["vs_before_se"] = delong_diff(after.labels, after.probs, before.probs)
    log(f"  after:  auc {after.row['auc']:.4f}, embedding params {after.row['emb_params']:,}")
    report = FDOReport(fields, before.row, after.row, fdo, run_dir)
    if run_dir is not None:
        (run_dir / "table.txt").write_text(report.text() + "\n")
        write_results(run_dir, report.as_dict())
    return report
