"""What every training path resolves the same way before it starts: the model for the
source's schema, its tables and their EV configurations, and the number of steps.

Local, PS and collective training all call these, so the three build identical models
and tables from one configuration (the equivalence oracles depend on it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.data.base import DataSource
from psrec.data.factory import make_source
from psrec.embedding.layer import TableSpec, plan_tables
from psrec.embedding.local import table_seed
from psrec.ev import EVConfig
from psrec.models.base import CTRModel, FeatureSpec

__all__ = ["ModelPlan", "plan_model", "count_rounds"]


@dataclass
class ModelPlan:
    """The source, the model (seeded from `train.seed`), its tables and each table's EVConfig."""

    source: DataSource
    spec: FeatureSpec
    model: CTRModel
    tables: list[TableSpec]
    ev_configs: dict[str, EVConfig]


def plan_model(cfg, source: DataSource | None = None) -> ModelPlan:
    """Seed torch, build the configured model for the source's schema, plan its tables.

    Per-field widths come from `embedding.field_dims` when set, else `embedding.dim` for all.
    """
    torch.manual_seed(cfg.train.seed)
    source = source or make_source(cfg)
    nf = source.schema.num_fields
    dims = cfg.embedding.field_dims or (cfg.embedding.dim,) * nf
    if len(dims) != nf:
        raise ValueError(f"embedding.field_dims has {len(dims)} widths for {nf} fields")
    spec = FeatureSpec(nf, dims, source.schema.num_dense)
    model = cfg.build_model(spec)
    tables = plan_tables(source.schema, model, dims, cfg.embedding.sharing)
    ev_configs = {t.name: cfg.embedding.ev_config(t.dim, table_seed(cfg.train.seed, t.name)) for t in tables}
    return ModelPlan(source, spec, model, tables, ev_configs)


def count_rounds(cfg, train_rows: int, workers: int) -> int:
    """Steps per worker when `workers` each take a batch per step from `train_rows` rows
    (capped by `train.max_steps`); at least one or a ValueError naming the setting."""
    bs = cfg.data.batch_size
    rounds = train_rows // (bs * workers)
    if cfg.train.max_steps:
        rounds = min(rounds, cfg.train.max_steps)
    if rounds < 1:
        raise ValueError(f"data.train_rows={cfg.data.train_rows} is less than one round "
                         f"({workers} workers x batch {bs})")
    return rounds
