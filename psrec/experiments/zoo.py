"""Model zoo: every registered model trained on the same rows with the same budget.

    run_zoo(cfg, zoo)           every model (plus refinement variants) -> ZooReport, table, notes
    (the xDeepInt G-FTRL comparison it can add lives in psrec.experiments.gftrl)

The budget is one pass over the same `train_rows` synthetic rows (same seed, same batches,
same order) for every model, then AUC/logloss on the same held-out rows. The rows are
generated once and served from memory (`MaterializedSource`), so no model pays for data
generation and all see bit-identical batches. Each model uses its own Params defaults: the
base configuration's `[model]` section is ignored, everything else (embedding width and
optimizer, dense optimizer, batch size, seed) is shared.

AUC differences come with a DeLong standard error computed on the same evaluation rows
(DeLong, DeLong & Clarke-Pearson 1988), so "does not beat DNN" separates noise from a real gap.

Layering: a runner. It uses psrec.core.local and the models; only the CLI imports it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from psrec.config import Config, ModelConfig, with_section
from psrec.core.local import LocalSetup, build_local, train_range
from psrec.core.progress import progress_bar
from psrec.core.ranges import RowRanges
from psrec.core.step import DenseUpdate
from psrec.data.base import Batch, DataSource, Ragged
from psrec.data.factory import make_source
from psrec.embedding.local import LocalStore
from psrec.metrics.auc import auc, logloss
from psrec.metrics.delong import delong_diff
from psrec.models import model_names
from psrec.models.refine import refiner_names
from psrec.report.table import format_table
from psrec.runs import write_results

if TYPE_CHECKING:  # the G-FTRL module imports this one
    from psrec.experiments.gftrl import GFTRLConfig, GFTRLReport

__all__ = ["ZooConfig", "ZooEntry", "ZooReport", "FitResult",
           "MaterializedSource", "zoo_entries", "fit", "run_zoo",
           "zero_rows", "embedding_params", "experiment_data", "make_experiment_dir",
           "report_text", "zoo_notes", "ZOO_COLUMNS"]

ZOO_COLUMNS = ["rank", "model", "auc", "vs_dnn", "logloss", "train_loss", "dense_params",
               "emb_params", "samples_per_s", "steps"]


# ---- configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class ZooConfig:
    """What `psrec zoo` trains, and on how many rows.

    Args:
        models: registered model names; empty = every registered model.
        refiners: refinement modules (`psrec.models.refine`) each put in front of
            `refine_base`, one extra row "<base>+<refiner>" each.
        refine_base: the model the refiners are tried on.
        train_rows: training rows every model sees once (the shared budget).
        eval_rows: held-out rows right after the training rows.
        baseline: the model every interaction model must beat.
        reference: the model the notes explain gaps against.
    """

    models: tuple[str, ...] = ()
    # FRNet is also registered as a model (FRNet-B in front of DeepFM, the paper's pairing);
    # FRNet-B in front of DNN shows the refiner on its own.
    refiners: tuple[str, ...] = ("frnet_b",)
    refine_base: str = "dnn"
    # Measured (1 thread, 2 cores shared with other jobs at load ~6): the 19 entries plus the
    # 3 G-FTRL runs took 12.8 CPU-minutes, 23 wall-minutes; FiBiNET and xDeepFM alone take a
    # quarter. At 300K rows (293 steps) DeepFM has learned the planted pairs (AUC 0.779 vs LR
    # 0.752) while DNN has barely started (0.757): slow learners show up as "too few steps".
    train_rows: int = 300_000
    eval_rows: int = 100_000  # DeLong SE of an AUC difference ~0.001-0.002 at this size
    baseline: str = "lr"
    reference: str = "dnn"

    def __post_init__(self) -> None:
        if self.train_rows < 1 or self.eval_rows < 2:
            raise ValueError("zoo train_rows must be >= 1 and eval_rows >= 2")
        known = set(model_names())
        for name in (*self.models, self.refine_base, self.baseline, self.reference):
            if name not in known:
                raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(known))}")
        bad = [r for r in self.refiners if r not in refiner_names()]
        if bad:
            raise ValueError(f"unknown refiner(s) {bad}; known: {', '.join(refiner_names())}")


@dataclass(frozen=True)
class ZooEntry:
    """One row of the zoo: a registered model, optionally behind a refiner."""

    label: str
    model: str
    refine: str = "none"


def zoo_entries(zoo: ZooConfig) -> list[ZooEntry]:
    """The models to train: `zoo.models` (or all), then `<refine_base>+<refiner>` variants.

    The baseline and reference are always included: every note is relative to them.
    """
    names = [zoo.baseline, zoo.reference]
    names += [n for n in (zoo.models or model_names()) if n not in names]
    out = [ZooEntry(n, n) for n in names]
    out += [ZooEntry(f"{zoo.refine_base}+{r}", zoo.refine_base, r) for r in zoo.refiners]
    return out


# ---- data served from memory --------------------------------------------------------------

class MaterializedSource(DataSource):
    """Rows [0, num_rows) of `source`, read once and then served from memory.

    Every model of an experiment then trains on bit-identical batches without paying for
    generation again. Multi-valued fields are sliced through their CSR offsets.

    Args:
        source: any DataSource.
        num_rows: rows to keep; at most `source.num_rows`.

    Example:
        >>> from psrec.data.synthetic import SyntheticConfig, SyntheticSource
        >>> cfg = SyntheticConfig(num_fields=3, num_dense=1, num_pairs=1, num_triples=1)
        >>> m = MaterializedSource(SyntheticSource(cfg), 10)
        >>> m.read(2, 5).keys.shape, m.read(2, 5).start
        ((3, 3), 2)
    """

    def __init__(self, source: DataSource, num_rows: int) -> None:
        if not 0 < num_rows <= source.num_rows:
            raise ValueError(f"num_rows must be in [1, {source.num_rows}], got {num_rows}")
        self.schema = source.schema
        self._all = source.read(0, num_rows)

    @property
    def num_rows(self) -> int:
        return len(self._all)

    def read(self, start: int, end: int) -> Batch:
        self._check_range(start, end)
        a = self._all
        multi = [Ragged(r.values[r.offsets[start]:r.offsets[end]], r.offsets[start:end + 1] - r.offsets[start])
                 for r in a.multi]
        return Batch(keys=a.keys[start:end], dense=a.dense[start:end], labels=a.labels[start:end],
                     start=start, multi=multi)


# ---- training one configuration -----------------------------------------------------------

@dataclass
class FitResult:
    """One trained configuration: metrics, sizes and what is needed to look inside it.

    `row` is the JSON-able summary (auc, logloss, train_loss, params, samples_per_s...);
    `labels`/`probs` are the held-out predictions (n,) for paired AUC comparisons; `setup`
    holds the trained model and its LocalStore.
    """

    row: dict[str, Any]
    labels: np.ndarray
    probs: np.ndarray
    setup: LocalSetup | None  # None once dropped to free the tables


def fit(cfg: Config, source: DataSource, rr: RowRanges, label: str | None = None,
        dense_opt: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None) -> FitResult:
    """Build `cfg`'s model on `source`, train one pass over rr's training rows, predict the held-out rows.

    dense_opt: builds the dense optimizer from the model instead of `train.optimizer`
        (e.g. per-parameter-group FTRL); None keeps the configured one.
    """
    setup = build_local(cfg, source)
    if dense_opt is not None:
        setup.step.dense = DenseUpdate(dense_opt(setup.model))
    bs = cfg.data.batch_size
    total = -(-(rr.train_end - rr.train_start) // bs)
    if cfg.train.max_steps:
        total = min(total, cfg.train.max_steps)
    label = label or cfg.model.name
    with progress_bar(total, cfg.train.progress, desc=f"train {label}") as bar:
        stats = train_range(setup.step, setup.source, rr.train_start, rr.train_end, bs,
                            max_steps=total, bar=bar)
    t0 = time.perf_counter()
    ys, ps = [], []
    for b in setup.source.batches(rr.eval_start, rr.eval_end, max(bs, 8192)):
        ps.append(setup.step.predict(b))
        ys.append(b.labels)
    y, p = np.concatenate(ys), np.concatenate(ps)
    row = {
        "model": label,
        "auc": auc(y, p),
        "logloss": logloss(y, p),
        "train_loss": stats.loss_ema,  # EMA over the last ~50 steps, on training rows
        "first_order": bool(setup.model.uses_linear),  # has per-key first-order weights (an LR term)
        "dense_params": sum(t.numel() for t in setup.model.parameters()),
        "emb_params": embedding_params(setup.store),
        "samples_per_s": stats.samples / stats.seconds if stats.seconds > 0 else float("nan"),
        "train_seconds": stats.seconds,
        "eval_seconds": time.perf_counter() - t0,
        "steps": stats.steps,
        "train_rows": stats.samples,
    }
    return FitResult(row, y, p, setup)


def embedding_params(store) -> int:
    """Stored embedding values: sum over tables of rows x width (keys a run created)."""
    return int(sum(s.rows * store.dim(name) for name, s in store.stats().items()))


def zero_rows(store: LocalStore) -> dict[str, tuple[int, int]]:
    """table -> (rows whose values are all exactly 0, rows) in a LocalStore's EmbeddingVariables."""
    out = {}
    for name in store.table_names:
        values = store.variable(name).snapshot().values  # (R, D)
        out[name] = (int(np.count_nonzero(~values.any(axis=1))), int(values.shape[0]))
    return out


# ---- the zoo ------------------------------------------------------------------------------

@dataclass
class ZooReport:
    """Rows sorted by AUC, one note per model that does not beat the reference (or baseline)."""

    rows: list[dict[str, Any]]
    notes: list[str]
    planted_auc: float | None
    run_dir: Path | None
    gftrl: GFTRLReport | None = None

    def table(self) -> str:
        return format_table(self.rows, ZOO_COLUMNS)


def make_experiment_dir(cfg: Config, kind: str) -> Path:
    """`<run.dir>/<run.name or time-kind>` with the base configuration in `config.toml`."""
    name = cfg.run.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}"
    path = Path(cfg.run.dir) / name
    n = 1
    while path.exists() and not cfg.run.name:
        n += 1
        path = Path(cfg.run.dir) / f"{name}-{n}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(cfg.to_toml())
    return path


def experiment_data(cfg: Config, train_rows: int,
                    eval_rows: int) -> tuple[Config, MaterializedSource, RowRanges, float | None]:
    """`cfg` with the given ranges, its data served from memory, and the planted AUC (synthetic)."""
    cfg = with_section(cfg, data=replace(cfg.data, train_rows=train_rows, eval_rows=eval_rows, eval_start=-1,
                                         epochs=1))
    raw = make_source(cfg)
    rr = RowRanges(0, train_rows, train_rows, train_rows + eval_rows)
    source = MaterializedSource(raw, rr.eval_end)
    planted = getattr(raw, "planted_logits", None)
    planted_auc = None
    if planted is not None:
        planted_auc = auc(source.read(rr.eval_start, rr.eval_end).labels, planted(rr.eval_start, rr.eval_end))
    return cfg, source, rr, planted_auc


def run_zoo(cfg: Config, zoo: ZooConfig, run_dir: Path | None = None, gftrl: GFTRLConfig | None = None,
            log: Callable[[str], None] = print) -> ZooReport:
    """Train every zoo entry on the same rows, sort by AUC, explain gaps; write table.txt and results.json.

    gftrl: also run the xDeepInt G-FTRL comparison (`run_xdeepint_gftrl`) on the same rows.
    """
    cfg, source, rr, planted_auc = experiment_data(cfg, zoo.train_rows, zoo.eval_rows)
    fits: dict[str, FitResult] = {}
    for e in zoo_entries(zoo):
        mcfg = with_section(cfg, model=ModelConfig(name=e.model, refine=e.refine))
        r = fit(mcfg, source, rr, label=e.label)
        # Keep predictions only: the trained tables of 20 models would not fit in memory together.
        r.setup = None
        fits[e.label] = r
        log(f"  {e.label:<14} auc {r.row['auc']:.4f}  logloss {r.row['logloss']:.4f}  "
            f"{r.row['samples_per_s']:,.0f} samples/s  ({r.row['train_seconds'] + r.row['eval_seconds']:.0f} s)")
    ref = fits[zoo.reference]
    for f in fits.values():
        d, se = delong_diff(f.labels, f.probs, ref.probs)
        f.row["vs_dnn"], f.row["vs_dnn_se"] = d, se
        d, se = delong_diff(f.labels, f.probs, fits[zoo.baseline].probs)
        f.row["vs_lr"], f.row["vs_lr_se"] = d, se
    rows = sorted((f.row for f in fits.values()), key=lambda r: -r["auc"])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    report = ZooReport(rows, zoo_notes(rows, zoo), planted_auc, run_dir)
    if gftrl is not None:
        from psrec.experiments.gftrl import run_xdeepint_gftrl  # it reuses this module's helpers

        report.gftrl = run_xdeepint_gftrl(cfg, gftrl, zoo.train_rows, zoo.eval_rows, data=(cfg, source, rr), log=log)
    if run_dir is not None:
        _write(run_dir, report, cfg, zoo)
    return report


# Architectural facts used to explain a gap (from each model's file and MODELS.md); the
# measured part of a note (steps, loss, SE) is computed from the run itself.
_STRUCTURE = {
    "lr": "first order only",
    "fm": "no MLP: one dot product per field pair, so the planted third-order term is out of reach",
    "xdeepint": "no MLP: polynomial (PIN) layers with a linear read-out; dense features enter linearly",
    "dynint": "no MLP: gated polynomial (PIN) layers with a linear read-out",
    "eulernet": "embeddings are phases, so a key acts through cos/sin of its row; two Euler layers, "
                "each with one implicit ReLU Linear, and no MLP",
    "rfm": "embeddings act as rotation angles through cosines, LayerNorm-ed in every rotation layer; "
           "linear read-out of cos/sin (amp_hidden=())",
    "fibinet": "bilinear products of all field pairs, on E and on SENET-reweighted E, feed one wide MLP",
    "xdeepfm": "CIN: outer products of all field pairs in every layer",
    "dcn": "its cross layers add only rank-one terms x0 (x_l . w); the parallel MLP does the rest, as in DNN",
    "dcn_v2": "a full D x D cross matrix per layer (D = fields x width)",
    "gdcn": "a D x D cross matrix and a D x D gate per layer",
    "dcn_mix": "a gated mixture of 4 low-rank (r = 32) experts per cross layer",
    "can": "co-action MLPs only on its configured field pairs; otherwise a DNN",
    "ipnn": "an MLP on [x0 ; all pairwise inner products]",
    "opnn": "the paper's sum-pooled outer product: one d x d summary of all fields",
}


def zoo_notes(rows: list[dict[str, Any]], zoo: ZooConfig) -> list[str]:
    """A short reasoned note per model that fails the baseline or trails the reference.

    The measured diagnosis: within 2 DeLong SEs of the reference = a tie; a training loss
    above the reference's = underfitting within this budget (too few steps for its size,
    or an architecture that learns slowly); a training loss at or below it with a worse
    held-out AUC = it fits the training rows as well but generalises worse (memorising ids).
    """
    by = {r["model"]: r for r in rows}
    ref = by[zoo.reference]
    others = [r for r in rows if r["model"] != zoo.baseline]
    beat = [r for r in others if r["vs_lr"] > 2 * r["vs_lr_se"]]
    notes = [f"{len(beat)} of {len(others)} interaction models beat {zoo.baseline.upper()} by more than 2 DeLong SEs"
             + ("" if len(beat) == len(others) else
                f" (not: {', '.join(r['model'] for r in others if r not in beat)})")]
    for r in rows:
        name = r["model"]
        if name in (zoo.baseline, zoo.reference):
            continue
        base = name.split("+")[0]
        fails_lr = r["vs_lr"] <= 2 * r["vs_lr_se"]
        if not fails_lr and r["vs_dnn"] > 0:
            continue
        d, se = r["vs_dnn"], r["vs_dnn_se"]
        size = r["dense_params"] / max(ref["dense_params"], 1)
        loss_gap = (r["train_loss"] or float("nan")) - (ref["train_loss"] or float("nan"))
        head = f"{name}: " + (f"DOES NOT BEAT {zoo.baseline.upper()} ({r['vs_lr']:+.4f} +- {r['vs_lr_se']:.4f}); "
                              if fails_lr else "")
        head += f"{d:+.4f} +- {se:.4f} AUC vs {zoo.reference.upper()}"
        if abs(d) < 2 * se:
            why = "a tie within noise (|diff| < 2 SE)"
        elif loss_gap > 0.002:
            why = (f"underfits in this budget: train loss {r['train_loss']:.4f} vs {ref['train_loss']:.4f} "
                   f"after {r['steps']} steps with {r['dense_params']:,} dense weights ({size:.1f}x "
                   f"{zoo.reference.upper()}'s)")
        else:
            why = (f"fits the training rows as well (train loss {r['train_loss']:.4f} vs "
                   f"{ref['train_loss']:.4f}) but generalises worse: held-out logloss "
                   f"{r['logloss']:.4f} vs {ref['logloss']:.4f}")
        if fails_lr:
            lr_loss = by[zoo.baseline]["train_loss"]
            why += f"; train loss vs {zoo.baseline.upper()}'s: {r['train_loss']:.4f} vs {lr_loss:.4f}"
            if not r.get("first_order", True):
                why += ("; it has no first-order (per-key weight) term, so even the first-order part of the "
                        "planted logit must be learned through its interaction layers")
        hint = _STRUCTURE.get(base)
        notes.append(f"{head}: {why}" + (f"; {hint}" if hint else ""))
    return notes


def _write(run_dir: Path, report: ZooReport, cfg: Config, zoo: ZooConfig) -> None:
    text = report_text(report)
    (run_dir / "table.txt").write_text(text + "\n")
    write_results(run_dir, {
        "mode": "zoo",
        "zoo": {k: (list(v) if isinstance(v, tuple) else v) for k, v in zoo.__dict__.items()},
        "planted_auc": report.planted_auc,
        "models": report.rows,
        "notes": report.notes,
        "gftrl": report.gftrl.as_dict() if report.gftrl else None,
        "run_dir": str(run_dir),
    })


def report_text(report: ZooReport) -> str:
    """The table, the planted AUC and the notes, as printed and as written to table.txt."""
    out = [report.table()]
    if report.planted_auc is not None:
        out.append(f"planted model AUC on the same rows (best achievable): {report.planted_auc:.4f}")
    out.append("vs_dnn: AUC difference to DNN on the same held-out rows (DeLong SE in results.json)")
    if report.notes:
        out.append("")
        out.append("notes (models that trail DNN or do not beat LR):")
        out += [f"  - {n}" for n in report.notes]
    if report.gftrl is not None:
        out.append("")
        out.append(report.gftrl.text())
    return "\n".join(out)
