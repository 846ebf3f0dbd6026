"""xDeepInt with G-FTRL: how many embedding rows group lasso zeroes, and what AUC remains.

xDeepInt trains its embedding rows with G-FTRL (the EV core's optimizer; whole rows go to
exactly zero) and its PIN weights with FTRL, against the same model with Adagrad rows, on
the zoo's rows (`psrec zoo --models xdeepint`, or inside a full zoo run).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from psrec.config import Config, ModelConfig, with_section
from psrec.core.ranges import RowRanges
from psrec.data.base import DataSource
from psrec.ev.config import OptimizerConfig
from psrec.experiments.zoo import experiment_data, fit, zero_rows
from psrec.metrics.delong import delong_diff
from psrec.optim import FTRL
from psrec.report.table import format_table

__all__ = ["GFTRLConfig", "GFTRLReport", "run_xdeepint_gftrl"]


@dataclass(frozen=True)
class GFTRLConfig:
    """xDeepInt's training recipe (yanyachen/xDeepInt, experiment/criteo/nn1.py), and the
    G-FTRL l1 values to try against Adagrad rows.

    Values are in the author's units, for a loss *summed* over the batch (the reference uses
    `Reduction.SUM`); ours is the batch mean, whose gradients are 1/B as large. FTRL-Proximal
    gives the same weights for gradients g/B when beta, l1, l2 and sqrt(initial accumulator)
    are divided by B too (alpha unchanged), so the optimizers below divide them by the batch size.

    Args:
        alpha, beta, l2: G-FTRL on the embedding rows (author: 0.02, 1, 10).
        l1s: G-FTRL group-lasso strengths, one run each (author: 10); a row is exactly zero
            while ||z|| <= l1 sqrt(d).
        pin_alpha, pin_l1, pin_l2: TF FtrlOptimizer on every dense weight (author: 0.02, 0.1,
            0.1; TF's beta is 0, its accumulator starts at 0.1 and its l2 is 2x ours).
        adagrad_lr: the comparison run's Adagrad rate on the rows (the run default's).
        init_scale: std of the initial rows, in both runs; 0 keeps `embedding.initializer`.
    """

    alpha: float = 0.02
    beta: float = 1.0
    l2: float = 10.0
    l1s: tuple[float, ...] = (1.0, 10.0)
    pin_alpha: float = 0.02
    pin_l1: float = 0.1
    pin_l2: float = 0.1
    adagrad_lr: float = 0.03
    # psrec's G-FTRL starts a fresh row's z at -(w0 D + l1 sqrt(d) w0/|w0|), so the row keeps
    # its initial value and can only be zeroed once its gradients cancel the margin |w0| D,
    # whatever l1 is (a larger l1 mostly freezes row directions instead). At the run default
    # 0.01 that margin is ~4 typical updates and a one-pass run zeroes almost nothing
    # (measured, 100K rows: 39 of 223K rows at l1 10, AUC -0.024); at 0.001 rows the data do
    # not support fall to zero (2.6% at l1 10). Adagrad's AUC barely moves (0.7405 vs 0.7419).
    init_scale: float = 0.001

    def __post_init__(self) -> None:
        for k in ("alpha", "pin_alpha", "adagrad_lr"):
            if getattr(self, k) <= 0:
                raise ValueError(f"gftrl.{k} must be > 0")
        for k in ("beta", "l2", "pin_l1", "pin_l2", "init_scale"):
            if getattr(self, k) < 0:
                raise ValueError(f"gftrl.{k} must be >= 0")
        if not self.l1s or any(v < 0 for v in self.l1s):
            raise ValueError(f"gftrl.l1s must be non-empty and >= 0, got {self.l1s}")

    def embedding_optimizer(self, l1: float, batch_size: int) -> OptimizerConfig:
        """G-FTRL for the EVs, rescaled to the batch-mean loss (the author's n starts at 0)."""
        b = float(batch_size)
        return OptimizerConfig(name="gftrl", lr=self.alpha, ftrl_beta=self.beta / b, l1=l1 / b,
                               l2=self.l2 / b, initial_accumulator=0.0)

    def dense_optimizer(self, model: torch.nn.Module, batch_size: int) -> FTRL:
        """TF-equivalent FTRL on every dense weight of xDeepInt (PIN layers and the read-out).

        All dense weights, not only the PIN layers': the author's 'PIN' variable scope, which
        his FTRL optimizer trains, holds the output layer too, and xDeepInt has no other
        dense weights, so one optimizer is the reference's setup (no Adam anywhere).
        """
        b = float(batch_size)
        return FTRL(model.parameters(), lr=self.pin_alpha, beta=0.0, l1=self.pin_l1 / b,
                    l2=2 * self.pin_l2 / b, initial_accumulator_value=0.1 / b ** 2)


@dataclass
class GFTRLReport:
    """xDeepInt trained on the same rows with G-FTRL rows (one run per l1) and Adagrad rows;
    FTRL on the dense weights every time. Each row: auc, logloss, emb_rows, zero_rows, ..."""

    runs: list[dict[str, Any]]
    adagrad: dict[str, Any]
    config: GFTRLConfig

    def as_dict(self) -> dict[str, Any]:
        return {"gftrl": self.runs, "adagrad": self.adagrad,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.__dict__.items()}}

    def text(self) -> str:
        c = self.config
        rows = [{"opt": "gftrl", **r, "l1": f"{r['l1']:g}"} for r in self.runs]
        rows.append({"opt": "adagrad", **self.adagrad})
        out = [
            f"xDeepInt with G-FTRL rows (alpha {c.alpha}, beta {c.beta}, l2 {c.l2}, l1 below; /batch size for "
            f"the mean loss) vs Adagrad rows (lr {c.adagrad_lr});",
            f"FTRL on all dense weights (alpha {c.pin_alpha}, l1 {c.pin_l1}, l2 {c.pin_l2}) and initial rows "
            f"N(0, {c.init_scale}^2) in every run:",
            format_table(rows, ["opt", "l1", "auc", "vs_adagrad", "logloss", "emb_rows", "zero_rows", "zero_pct",
                                "emb_params", "samples_per_s"],
                         ["embedding opt", "l1", "auc", "vs adagrad", "logloss", "rows", "all-zero rows", "zero %",
                          "nonzero values", "samples/s"]),
        ]
        for r in self.runs:
            out.append(f"G-FTRL l1 {r['l1']:g}: {r['zero_rows']:,} of {r['emb_rows']:,} embedding rows exactly 0 "
                       f"({r['zero_pct']:.2f}%); AUC {r['auc']:.4f} vs Adagrad {self.adagrad['auc']:.4f} "
                       f"({r['vs_adagrad']:+.4f} +- {r['vs_adagrad_se']:.4f} DeLong SE)")
        return "\n".join(out)


def run_xdeepint_gftrl(cfg: Config, g: GFTRLConfig, train_rows: int, eval_rows: int,
                       data: tuple[Config, DataSource, RowRanges] | None = None,
                       log: Callable[[str], None] = print) -> GFTRLReport:
    """Train xDeepInt with G-FTRL rows (each l1) and with Adagrad rows, FTRL dense in all;
    count the rows whose values are all exactly 0 in the LocalStore's EmbeddingVariables.

    data: (cfg, source, ranges) from `experiment_data`, to reuse rows already in memory.
    """
    if data is None:
        cfg, source, rr, _ = experiment_data(cfg, train_rows, eval_rows)
    else:
        cfg, source, rr = data
    bs = cfg.data.batch_size
    emb = cfg.embedding
    if g.init_scale > 0:
        emb = replace(emb, initializer=replace(emb.initializer, scale=g.init_scale))
    base = with_section(cfg, model=ModelConfig(name="xdeepint"))
    arms = [(f"gftrl l1={l1:g}", l1, g.embedding_optimizer(l1, bs)) for l1 in g.l1s]
    arms.append(("adagrad", None, replace(emb.optimizer, name="adagrad", lr=g.adagrad_lr)))
    fits = []
    for label, l1, opt in arms:
        c = with_section(base, embedding=replace(emb, optimizer=opt))
        r = fit(c, source, rr, label=f"xdeepint/{label}", dense_opt=lambda m: g.dense_optimizer(m, bs))
        zr = zero_rows(r.setup.store)
        r.row.update(l1=l1, zero_rows=sum(z for z, _ in zr.values()), emb_rows=sum(n for _, n in zr.values()))
        r.row["zero_pct"] = round(100.0 * r.row["zero_rows"] / max(r.row["emb_rows"], 1), 2)
        r.row["emb_params"] = int(sum((n - z) * r.setup.store.dim(t) for t, (z, n) in zr.items()))
        r.setup = None
        fits.append(r)
        log(f"  xdeepint/{label:<12} auc {r.row['auc']:.4f}  all-zero rows {r.row['zero_rows']:,} "
            f"of {r.row['emb_rows']:,}")
    ada = fits[-1]
    for r in fits:
        r.row["vs_adagrad"], r.row["vs_adagrad_se"] = delong_diff(r.labels, r.probs, ada.probs)
    return GFTRLReport([r.row for r in fits[:-1]], ada.row, g)
