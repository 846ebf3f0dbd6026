"""A run's trained model on disk, and loading it back to predict.

Every run saves its final model as a checkpoint-format directory (`psrec.core.checkpoint`:
sha256 manifest, atomic rename) under `<run dir>/model/`:

    model.json                 format "psrec-model", model name, feature spec, schema, tables
    config.toml                the run's resolved configuration (the model's hyperparameters)
    tables/shard-<i>/<table>/  EV exports, one per shard that held the table (PS shards,
                               collective ranks; one shard locally)
    dense/                     dense parameters (`psrec.core.dense_state`)

`load_model(path)` rebuilds the model, restores every table from all its shards into one
in-process store, and predicts: `psrec export RUN_DIR OUT` copies it out, verified.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from psrec.core import checkpoint
from psrec.data.base import Batch, DataSource, FieldSpec, Schema

__all__ = ["SavedModel", "load_model", "model_info", "find_model", "export_model", "FORMAT"]

FORMAT = "psrec-model"


def model_info(cfg, spec, tables, schema: Schema, shards: int) -> dict[str, Any]:
    """The JSON `model.json` holds (what `load_model` rebuilds the model from)."""
    return {"format": FORMAT, "format_version": 1, "model": cfg.model.name, "shards": int(shards),
            "spec": {"num_fields": spec.num_fields, "embed_dims": list(spec.embed_dims),
                     "num_dense": spec.num_dense},
            "schema": {"fields": [asdict(f) for f in schema.fields], "dense_names": list(schema.dense_names)},
            "tables": [{"name": t.name, "dim": t.dim, "fields": list(t.fields), "role": t.role} for t in tables]}


def write_model_files(path: Path, cfg, info: dict[str, Any]) -> None:
    (path / "model.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    (path / "config.toml").write_text(cfg.to_toml())


def find_model(path: str | Path) -> Path:
    """The verified model directory at `path`: a run directory, its `model/`, or the model itself."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / checkpoint.MANIFEST).is_file():
            checkpoint.verify(cand)
            return cand
        newest = checkpoint.latest(cand)
        if newest is not None:
            return newest
    raise checkpoint.CheckpointError(f"{path}: no saved model (no verified {checkpoint.MANIFEST} there or "
                                     "under model/)")


def export_model(run_dir: str | Path, out: str | Path) -> Path:
    """Copy the run's verified model to `out` (refusing to overwrite), and verify the copy."""
    src, out = find_model(run_dir), Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new directory")
    shutil.copytree(src, out)
    checkpoint.verify(out)
    return out


class SavedModel:
    """A trained model loaded from disk: `predict(batch)` gives click probabilities.

    Example:
        >>> m = psrec.load_model("runs/my-run")                     # doctest: +SKIP
        >>> m.evaluate(source, 0, 10_000)["auc"]                    # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        from psrec.config import load_config
        from psrec.core.dense_state import load_dense
        from psrec.core.step import TrainStep
        from psrec.embedding.layer import EmbeddingLayer, TableSpec
        from psrec.embedding.local import LocalStore, table_seed
        from psrec.models.base import FeatureSpec

        self.path = path
        info = json.loads((path / "model.json").read_text())
        if info.get("format") != FORMAT:
            raise checkpoint.CheckpointError(f"{path}: model.json is not a {FORMAT} description")
        self.cfg = cfg = load_config(path / "config.toml")
        s = info["spec"]
        spec = FeatureSpec(s["num_fields"], tuple(s["embed_dims"]), s["num_dense"])
        self.schema = Schema(tuple(FieldSpec(**f) for f in info["schema"]["fields"]),
                             tuple(info["schema"]["dense_names"]))
        self.tables = [TableSpec(t["name"], t["dim"], tuple(t["fields"]), t["role"]) for t in info["tables"]]
        self.model = cfg.build_model(spec)
        load_dense(path / "dense", self.model)
        seed = cfg.train.seed
        store = LocalStore({t.name: cfg.embedding.ev_config(t.dim, table_seed(seed, t.name)) for t in self.tables})
        shards = sorted((path / "tables").glob("shard-*"), key=lambda p: int(p.name.split("-")[1]))
        for t in self.tables:
            parts = [sh / t.name for sh in shards if (sh / t.name).is_dir()]
            store.variable(t.name).restore(parts)  # N shards -> one table
        self.store = store
        layer = EmbeddingLayer(self.schema, self.tables, cfg.embedding.pooling)
        self._step = TrainStep(self.model, layer, store)

    def predict(self, batch: Batch) -> np.ndarray:
        """(B,) float64 click probabilities."""
        return self._step.predict(batch)

    def evaluate(self, source: DataSource, start: int, end: int, batch_size: int = 4096) -> dict[str, float]:
        """AUC and logloss over rows [start, end) of `source`."""
        from psrec.core.job import eval_metrics
        from psrec.core.local import predict_range

        return eval_metrics(*predict_range(self._step, source, start, end, batch_size))


def load_model(path: str | Path) -> SavedModel:
    """The model saved by a run (`path`: the run directory, its `model/`, or an exported copy)."""
    return SavedModel(find_model(path))
